"""routegate: a stable HTTP API in front of unstable ones."""
