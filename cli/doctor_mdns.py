"""``doctor``'s mDNS check: announce a throwaway service, listen, and say who was heard.

A machine that cannot hear its own announcement sits on a network (or behind a firewall) that
drops multicast: its peers will not find it either, and must be named (``--peer``). Nodes of
other swarms (other tags) are listed too: they are harmless, but explain a crowded network.
"""

from __future__ import annotations

import secrets
import socket
import threading
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
    """Announce ``doctor-<random>`` for ``wait`` seconds and collect what is announced."""
    from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

    heard = Heard()
    me = f"doctor-{secrets.token_hex(4)}"
    done = threading.Event()
    lock = threading.Lock()

    def on_change(zeroconf, service_type, name, state_change) -> None:
        if state_change is ServiceStateChange.Removed:
            return
        info = zeroconf.get_service_info(service_type, name, timeout=1500)
        props = {k.decode(): (v or b"").decode(errors="replace")
                 for k, v in (info.properties if info else {}).items()}
        with lock:
            if props.get("id") == me:
                heard.self_heard = True
                done.set()
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
        done.wait(wait)
        time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))  # others answer too
        browser.cancel()
        zc.unregister_service(info)
    except Exception as exc:  # zeroconf's errors: the finding, not a traceback
        heard.error = str(exc) or type(exc).__name__
    finally:
        zc.close()
    return heard
