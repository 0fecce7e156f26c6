"""Network addresses as users and nodes write them: `HOST:PORT`, `[IPv6]:PORT`, or `HOST` with a default port."""

from __future__ import annotations

from .errors import InvalidInput


class InvalidAddress(InvalidInput):
    """Text that is not HOST:PORT."""


def parse_host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """(host, port) from `text`; without a port, `default_port` (or an error if there is none)."""
    host, sep, port = text.rpartition(":")
    if not sep or (host.startswith("[") != host.endswith("]")) or (":" in host and not host.startswith("[")):
        if default_port is None:
            raise InvalidAddress(f"invalid address {text!r}: expected HOST:PORT")
        host, port = text, str(default_port)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidAddress(f"invalid address {text!r}: expected HOST:PORT with a port from 1 to 65535")
    return host, int(port)
