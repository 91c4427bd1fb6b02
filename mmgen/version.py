"""The library's version, on its own so that modules can record it without importing the package back."""

__version__ = "0.1.0"
