"""mDNS: a node announces itself as ``_pythagoras._tcp.local.``; clients and nodes browse for peers.

The TXT record says what a client needs to choose a node and nothing secret: node id, swarm tag
(derived from the key, not the key), protocol version, Python version, worker slots. mDNS is a
hint only: zeroconf keeps a vanished node listed for many minutes, so liveness comes from
heartbeats on the ZeroMQ connection, never from here.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zeroconf import ServiceInfo, Zeroconf

__all__ = ["SERVICE", "Announcement", "Advert", "local_addresses", "Browser"]

log = logging.getLogger(__name__)

SERVICE = "_pythagoras._tcp.local."


@dataclass(frozen=True)
class Advert:
    """What one node announces."""

    node_id: str
    addresses: tuple[str, ...]
    port: int
    tag: str
    protocol: int
    python: str
    workers: int
    resources: str = ""  # a summary (``cpus=2,gpus=1,memory=16G``): never a secret

    def properties(self) -> dict[str, str]:
        found = {"id": self.node_id, "tag": self.tag, "proto": str(self.protocol),
                 "py": self.python, "slots": str(self.workers)}
        if self.resources:
            found["res"] = self.resources[:200]
        return found


def local_addresses() -> list[str]:
    """Non-loopback IPv4 addresses of this host's interfaces that are up."""
    import psutil

    found = []
    stats = psutil.net_if_stats()
    for name, addrs in psutil.net_if_addrs().items():
        if name in stats and not stats[name].isup:
            continue
        for addr in addrs:
            if addr.family == socket.AF_INET and not ipaddress.ip_address(addr.address).is_loopback:
                found.append(addr.address)
    return found


class Announcement:
    """Registers a node's service in the background and unregisters it on :meth:`close`."""

    def __init__(self, advert: Advert, interfaces: list[str] | None):
        self.advert = advert
        self.interfaces = interfaces
        self._zc: Zeroconf | None = None
        self._info: ServiceInfo | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._register, name="pythagoras-mdns", daemon=True)
        self._thread.start()

    def _register(self) -> None:
        try:
            from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, Zeroconf

            interfaces = self.interfaces or InterfaceChoice.All
            self._zc = zc = Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
            name = f"{self.advert.node_id}.{SERVICE}"
            self._info = info = ServiceInfo(
                SERVICE, name, port=self.advert.port, properties=self.advert.properties(),
                addresses=[socket.inet_aton(a) for a in self.advert.addresses],
                server=f"pythagoras-{self.advert.node_id}.local.",
            )
            zc.register_service(info)
            log.info("announced on mDNS as %s at %s:%d", name, ",".join(self.advert.addresses),
                     self.advert.port)
        except Exception as exc:
            log.error("mDNS announcement failed (%s); peers can still reach this node by address",
                      exc)
        finally:
            self._done.set()

    def close(self) -> None:
        self._done.wait(10)
        zc, info = self._zc, self._info
        if zc is None:
            return
        try:
            if info is not None:
                zc.unregister_service(info)
        except Exception as exc:  # shutting down: say it, carry on
            log.warning("mDNS unregistration failed: %s", exc)
        finally:
            zc.close()


class Browser:
    """Keeps the adverts of nodes of one swarm (by tag) currently listed on mDNS, and apart
    (:attr:`others`) those of other swarms' nodes, which a node only mentions: a machine joined
    to the wrong swarm would otherwise sit silently in a swarm of one."""

    def __init__(self, tag: str, interfaces: list[str] | None = None, own_id: str | None = None):
        from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, Zeroconf

        self.tag = tag
        self.own_id = own_id
        self.adverts: dict[str, Advert] = {}
        self.others: dict[str, Advert] = {}  # node id → advert of a node of another swarm
        self._lock = threading.Lock()
        self._zc = Zeroconf(interfaces=interfaces or InterfaceChoice.All, ip_version=IPVersion.V4Only)
        self._browser = ServiceBrowser(self._zc, SERVICE, handlers=[self._on_change])

    def _on_change(self, zeroconf, service_type, name, state_change) -> None:
        from zeroconf import ServiceStateChange

        if state_change is ServiceStateChange.Removed:
            with self._lock:
                for known in (self.adverts, self.others):
                    for key, advert in list(known.items()):
                        if f"{advert.node_id}.{SERVICE}" == name:
                            del known[key]
            return
        info = zeroconf.get_service_info(service_type, name, timeout=2000)
        if info is None:
            return
        props = {k.decode(): (v or b"").decode(errors="replace") for k, v in info.properties.items()}
        try:
            advert = Advert(props["id"], tuple(info.parsed_addresses()), int(info.port),
                            props["tag"], int(props["proto"]), props["py"], int(props["slots"]))
        except (KeyError, ValueError, TypeError):
            log.debug("ignoring a malformed mDNS advert %s", name)
            return
        if advert.node_id == self.own_id:
            return
        with self._lock:
            if advert.tag != self.tag:
                self.others[advert.node_id] = advert
            else:
                self.adverts[advert.node_id] = advert

    def other_swarms(self) -> dict[str, list[Advert]]:
        """The nodes of other swarms listed on mDNS, by their swarm's tag."""
        found: dict[str, list[Advert]] = {}
        with self._lock:
            for advert in self.others.values():
                found.setdefault(advert.tag, []).append(advert)
        return found

    def snapshot(self) -> list[Advert]:
        with self._lock:
            return list(self.adverts.values())

    def reachable(self) -> list[tuple[str, int]]:
        """(host, port) of the announced nodes that speak this release's protocol."""
        from .wire import PROTOCOL_VERSION

        return [(a.addresses[0], a.port) for a in self.snapshot()
                if a.protocol == PROTOCOL_VERSION and a.addresses]

    def reachable_nodes(self) -> list[tuple[str, int, str]]:
        """(host, port, node id) of the announced nodes that speak this release's protocol."""
        from .wire import PROTOCOL_VERSION

        return [(a.addresses[0], a.port, a.node_id) for a in self.snapshot()
                if a.protocol == PROTOCOL_VERSION and a.addresses]

    def close(self) -> None:
        self._browser.cancel()
        self._zc.close()
