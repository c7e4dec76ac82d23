"""Listen addresses as users write them (``HOST:PORT``): pure, shared by the config (which
validates them) and the status server (which binds them)."""

from __future__ import annotations

from edge_runtime.errors import ConfigError


def parse_address(address: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT``, ``PORT`` or ``[::1]:PORT`` -> (host, port); port 0 = any free.

    Raises:
        ConfigError: the port is not a number from 0 to 65535.
    """
    text = address.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host.strip("[]") or default_host
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"'{address}' is not HOST:PORT (e.g. 0.0.0.0:8080, or :0 for any port)")
    return host, int(port_text)
