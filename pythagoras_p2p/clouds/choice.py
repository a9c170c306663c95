"""Which backend ``PCloud(...)`` stands for: the swarm when one answers, else the embedded default.

Backends register themselves here (:func:`register_backend`) when their module is imported, so
this module, like the base class, never imports them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..defaults import MDNS_WAIT, home_dir

__all__ = ["register_backend", "choose_backend", "MDNS_WAIT"]

log = logging.getLogger(__name__)

_BACKENDS: dict[str, type] = {}


def register_backend(kind: str, cls: type) -> None:
    """Make ``cls`` the backend of ``kind`` (``"local"`` or ``"swarm"``) for :func:`choose_backend`."""
    _BACKENDS[kind] = cls


def choose_backend(connection: dict, home: Any = None) -> type:
    """The backend ``PCloud(...)`` stands for; see ``parse_connection``."""
    LocalCloud, SwarmCloud = _BACKENDS["local"], _BACKENDS["swarm"]  # noqa: N806 (classes)
    if connection["mode"] == "local":
        return LocalCloud
    if connection["mode"] == "peers":
        return SwarmCloud
    home = home_dir(home or connection["home"])
    from ..errors import SecurityError
    from ..net.security import key_path, load_key

    try:
        key = load_key(home, connection["key"])
    except SecurityError as exc:
        _warn_once(home, f"{exc}. Running on the embedded default (this machine only) until "
                         f"the key is mended")
        return LocalCloud
    if key is None:
        log.info("%s is no member of a swarm: running on the embedded default (this machine's store "
                 "and worker processes)", home)
        return LocalCloud
    if _swarm_answers(home, key):
        log.info("using the swarm through this machine's node (home %s)", home)
        return SwarmCloud
    if connection["discovery"] == "mdns" and _member_on_mdns(key):
        log.info("using the swarm found on mDNS (this machine runs no node)")
        return SwarmCloud
    _warn_once(home, f"{home} belongs to swarm {key.name!r} ({connection['key'] or key_path(home)}) "
                     f"but no node of it answers: running on the embedded default (this machine "
                     f"only). Start this machine's node with `pythagoras-node start --detach`")
    return LocalCloud


_warned: set[str] = set()  # homes whose fallback was already said in this process


def _warn_once(home: Any, message: str) -> None:
    if str(home) not in _warned:
        _warned.add(str(home))
        log.warning(message)


def _member_on_mdns(key: Any) -> bool:
    """True if a member of the swarm of ``key`` is announced on mDNS."""
    from ..net.mdns import Browser

    browser = Browser(key.tag)
    try:
        deadline = time.monotonic() + MDNS_WAIT
        while time.monotonic() < deadline:
            if browser.snapshot():
                return True
            time.sleep(0.05)
        return False
    finally:
        browser.close()


def _swarm_answers(home: Any, key: Any) -> bool:
    """True if this home's node answers a probe."""
    from ..net.nodefile import local_node_address

    node = local_node_address(home)
    if node is None:
        return False
    from ..net.rpc import NodeUnreachable, request
    from ..net.sockets import endpoint
    from ..net.wire import WireError

    try:
        request(endpoint(*node), key, "probe", timeout=1.0)
    except (NodeUnreachable, WireError) as exc:
        log.info("this machine's node at %s:%d does not answer (%s)", node[0], node[1], exc)
        return False
    return True
