"""Test plugins with and without typed settings (a ``Config`` dataclass), for the plugin-settings tests."""

from __future__ import annotations

import dataclasses

from iterframe import hookimpl


class SettingsPlugin:
    """A plugin with typed settings."""

    @dataclasses.dataclass
    class Config:
        level: int = dataclasses.field(default=1, metadata={"help": "How much to report."})
        label: str = dataclasses.field(default="run", metadata={"help": "Prefix of its metrics."})
        tags: list[str] = dataclasses.field(default_factory=list, metadata={"help": "Tags to attach."})

        def __post_init__(self):
            if self.level < 0:
                raise ValueError(f"level must be >= 0, got {self.level}.")

    @hookimpl
    def on_run_start(self, context):
        pass


class UntypedPlugin:
    """A plugin that declares no settings: it reads them as a dict."""

    @hookimpl
    def on_run_start(self, context):
        pass
