"""``doctor``'s mDNS check: announce a throwaway service, listen, and say who was heard.

A machine that cannot hear its own announcement sits on a network (or behind a firewall) that
drops multicast: its peers will not find it either, and must be named (``--peer``). Nodes of
other swarms (other tags) are listed too: they are harmless, but explain a crowded network.
"""

from __future__ import annotations

import queue
import secrets
import socket
import time
from dataclasses import dataclass, field

from pythagoras_p2p.net.mdns import SERVICE, local_addresses

__all__ = ["Heard", "listen"]


@dataclass
class Heard:
    self_heard: bool = False
    members: list = field(default_factory=list)  # node ids of this swarm (by tag)
    other_swarms: dict = field(default_factory=dict)  # node id → tag
    error: str = ""


def listen(tag: str, wait: float) -> Heard:
    """Announce ``doctor-<random>`` and collect what is announced, for at most ``wait`` seconds:
    once its own announcement is heard, until nothing new was heard for :func:`settle` seconds.

    Announcements are resolved one at a time on this thread, each for as long as the wait
    leaves (a loaded machine answers late: a member resolved in a fixed second was missed)."""
    from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

    heard = Heard()
    me = f"doctor-{secrets.token_hex(4)}"
    names: queue.SimpleQueue = queue.SimpleQueue()

    def on_change(zeroconf, service_type, name, state_change) -> None:
        if state_change is not ServiceStateChange.Removed:
            names.put((service_type, name))  # resolved by listen's thread, not zeroconf's

    def heard_from(props: dict) -> None:
        if props.get("id") == me:
            heard.self_heard = True
        elif props.get("id") and props.get("tag") == tag:
            heard.members.append(props["id"])
        elif props.get("id"):
            heard.other_swarms[props["id"]] = props.get("tag", "?")

    addresses = local_addresses()
    try:
        zc = Zeroconf(ip_version=IPVersion.V4Only)
    except OSError as exc:
        heard.error = f"cannot open the mDNS socket ({exc})"
        return heard
    try:
        info = ServiceInfo(SERVICE, f"{me}.{SERVICE}", port=9,
                           properties={"id": me, "tag": "doctor", "proto": "0", "py": "0",
                                       "slots": "0"},
                           addresses=[socket.inet_aton(a) for a in addresses[:4]] or
                           [socket.inet_aton("127.0.0.1")],
                           server=f"{me}.local.")
        zc.register_service(info)
        browser = ServiceBrowser(zc, SERVICE, handlers=[on_change])
        deadline = time.monotonic() + wait
        quiet_from = deadline  # once it heard itself: when the last new name was heard
        seen: set = set()
        while (now := time.monotonic()) < min(deadline, quiet_from + settle(wait)):
            try:
                service_type, name = names.get(timeout=min(deadline, quiet_from + settle(wait)) - now)
            except queue.Empty:
                continue
            if name in seen:
                continue
            seen.add(name)
            found = zc.get_service_info(service_type, name,
                                        timeout=max(100, int((deadline - now) * 1000)))
            heard_from({k.decode(): (v or b"").decode(errors="replace")
                        for k, v in (found.properties if found else {}).items()})
            if heard.self_heard:
                quiet_from = time.monotonic()
        browser.cancel()
        zc.unregister_service(info)
    except Exception as exc:  # zeroconf's errors: the finding, not a traceback
        heard.error = str(exc) or type(exc).__name__
    finally:
        zc.close()
    return heard


def settle(wait: float) -> float:
    """Seconds without a new announcement, after its own, before listening stops: the others
    answered the same query by then (longer for a longer ``wait``, which a slow network asks)."""
    return max(1.0, wait / 4)
