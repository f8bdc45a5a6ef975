"""The single source of wsbridge's version."""

__version__ = "0.1.0.dev0"
