"""Built-in plugins, one module per component kind, registered through the plugin manager like any other."""
