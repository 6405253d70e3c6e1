"""The package version, in one place: ``pyproject.toml`` reads it from here at build time."""

__version__ = "0.2.0.dev0"
