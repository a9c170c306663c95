"""``connection=``: what a cloud is told about where its peers are, checked and normalized."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from ..defaults import DEFAULT_PORT
from ..errors import ConfigurationError

__all__ = ["parse_connection", "parse_peers"]

_CONNECTION_KEYS = {"peers", "discovery", "home", "key"}
_DISCOVERY = ("mdns", "static", "off")
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_EXAMPLE = f"node1, 10.0.0.7:{DEFAULT_PORT}, [::1]:{DEFAULT_PORT}"
_FORMS = (f"connection= takes None (automatic), 'local', 'host[:port],...' (for example "
          f"{_EXAMPLE!r}), or a mapping with 'peers', 'discovery', 'home' and 'key'")


def parse_connection(connection: Any) -> dict:
    """Check ``connection=`` and return it as ``{"mode", "peers", "discovery", "home", "key"}``.

    ``None`` is automatic, ``"local"`` never touches the network, ``"host[:port],..."`` names
    peers, and a mapping sets any of ``peers``, ``discovery``, ``home`` and ``key``.
    """
    spec: dict[str, Any] = {"mode": "auto", "peers": [], "discovery": "mdns", "home": None, "key": None}
    if connection is None:
        return spec
    if isinstance(connection, str):
        if connection.strip() == "local":
            spec.update(mode="local", discovery="off")
            return spec
        spec.update(mode="peers", discovery="static", peers=parse_peers(connection))
        return spec
    if isinstance(connection, Mapping):
        unknown = set(connection) - _CONNECTION_KEYS
        if unknown:
            raise ConfigurationError(
                f"connection= has unknown key(s) {sorted(unknown)}; it takes {sorted(_CONNECTION_KEYS)}"
            )
        peers = connection.get("peers") or []
        if isinstance(peers, str):
            peers = parse_peers(peers)
        else:
            peers = [p for item in peers for p in parse_peers(str(item))]
        discovery = connection.get("discovery", "static" if peers else "mdns")
        if discovery not in _DISCOVERY:
            raise ConfigurationError(
                f"connection['discovery'] is {discovery!r}; use one of {', '.join(_DISCOVERY)}"
            )
        spec.update(peers=peers, discovery=discovery, home=connection.get("home"),
                    key=connection.get("key"))
        spec["mode"] = "peers" if peers else ("local" if discovery == "off" else "auto")
        return spec
    raise ConfigurationError(f"{_FORMS}; not a {type(connection).__name__}")


def parse_peers(text: str) -> list[tuple[str, int]]:
    """``"a, b:7000, [::1]:7575"`` → ``[("a", 7575), ("b", 7000), ("::1", 7575)]``."""
    peers = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        host, port = item, str(DEFAULT_PORT)
        if item.startswith("["):
            host, bracket, rest = item[1:].partition("]")
            port = rest.removeprefix(":") or port
            if not bracket or (rest and not rest.startswith(":")):
                host = ""  # malformed: said below
        elif item.count(":") == 1:
            host, port = item.split(":")
        if not _is_host(host) or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(
                f"connection= has a malformed peer {item!r}; write host or host:port "
                f"(a host name or IP address, no scheme such as tcp://; port 1-65535, default "
                f"{DEFAULT_PORT}), separated by commas, for example {_EXAMPLE!r} (connection= "
                f"also takes None, 'local' or a mapping)"
            )
        peers.append((host, int(port)))
    if not peers:
        raise ConfigurationError(f"connection={text!r} names no peer; write 'host[:port],...'")
    return peers


def _is_host(host: str) -> bool:
    """Whether ``host`` is an IP address or a host name (letters, digits, ``-``, ``_``, dots)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOST_NAME.fullmatch(host)) and ".." not in host
