"""In-process adapters: the embedded demo and unit tests."""
