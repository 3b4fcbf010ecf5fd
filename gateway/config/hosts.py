"""A host as a ``Host`` header names it, read one way by ``server.allowed_hosts`` (here, in config)
and by the Host guard (gateway.edge), so an entry and a request's ``Host`` compare alike."""

from __future__ import annotations

import ipaddress


def host_name(authority: str) -> str:
    """``Host``/``Origin`` authority without port, lower-case, without brackets or a trailing dot."""
    text = authority.strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text[1:]
    name, colon, port = text.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        text = name
    return text.rstrip(".")


def ip_of(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``name`` is (an IPv6 one with or without brackets), or None for a host name."""
    try:
        return ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
