"""``python -m iterframe`` runs the CLI."""

from iterframe.cli import main

if __name__ == "__main__":
    main()
