"""``host:port`` as a URL writes it, for the addresses the commands print."""

from __future__ import annotations


def netloc(host: str, port: int | str) -> str:
    """An IPv6 address in brackets (``[::1]:8190``): ``::1:8190`` reads as a longer address and does
    not paste into curl or a browser."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
