"""prefstream: streaming natural-language preference profiles."""

__version__ = "0.1.0"
