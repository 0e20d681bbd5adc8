"""The package version, in a module of its own so that any module can import it during start-up."""

__version__ = "0.3.0"
