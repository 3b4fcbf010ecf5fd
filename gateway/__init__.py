"""routegate: a stable HTTP API in front of unstable ones."""

__version__ = "0.1.0"
