"""``PCloud``: the base of every backend, the user contract they share, and the choice of backend.

A cloud owns a store (the LMDB store of its home), the functions added to it, and a way to run
calls away from the caller (its ``_dispatch``). What happens on a call is the same everywhere:
the memoized call and the ``sync_parallel`` algorithm live in :mod:`..function` and
:mod:`..execution`; a backend only says where tasks run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ..defaults import DEFAULT_PORT, home_dir
from ..errors import ConfigurationError, StoreFullError
from ..execution.run import run_calls
from ..function import PureFunction
from ..identity.encoding import value_address
from ..identity.fingerprint import Identity
from ..requirements import parse_requirements
from ..store.core import MISSING, Store, open_store, warn_not_stored
from ..store.leases import leases_of
from ..store.packing import pack_parts
from ..store.records import result_meta

__all__ = ["PCloud", "parse_connection", "process_cloud", "enter_worker", "in_worker"]

log = logging.getLogger("pythagoras_p2p")

_CONNECTION_KEYS = {"peers", "discovery", "home", "key"}
_DISCOVERY = ("mdns", "static", "off")


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
    raise ConfigurationError(
        f"connection= takes None, 'local', 'host[:port],...' or a mapping, not a "
        f"{type(connection).__name__}"
    )


def parse_peers(text: str) -> list[tuple[str, int]]:
    """``"a, b:7000, [::1]:7575"`` → ``[("a", 7575), ("b", 7000), ("::1", 7575)]``."""
    peers = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        host, port = item, str(DEFAULT_PORT)
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":") or port
        elif item.count(":") == 1:
            host, port = item.split(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(
                f"connection= has a malformed peer {item!r}; write host or host:port "
                f"(port 1-65535, default {DEFAULT_PORT}), separated by commas"
            )
        peers.append((host, int(port)))
    if not peers:
        raise ConfigurationError(f"connection={text!r} names no peer; write 'host[:port],...'")
    return peers


class PCloud:
    """A cloud of pure functions. ``PCloud(...)`` itself gives the default backend.

    ``requires``: pip requirement specifiers a machine must satisfy to run calls.
    ``connection``: ``None`` (automatic), ``"local"``, ``"host[:port],..."``, or a mapping.
    """

    def __new__(cls, *args: Any, **kwargs: Any):
        if args:
            raise ConfigurationError(
                f"{cls.__name__}() takes keyword arguments only, e.g. "
                f"{cls.__name__}(requires=None, connection=None)"
            )
        if cls is PCloud:
            cls = _choose_backend(parse_connection(kwargs.get("connection")), kwargs.get("home"))
        return object.__new__(cls)

    def __init__(self, *, requires: Any = None, connection: Any = None, home: Any = None):
        self.requires = parse_requirements(requires)
        self.connection = parse_connection(connection)
        self.home = home_dir(home or self.connection["home"])
        self.store: Store = open_store(self.home)
        self._leases = leases_of(self.store.path)  # shared by every cloud of this home here
        self.functions: list[PureFunction] = []
        self._registered: set[bytes] = set()
        self._lock = threading.Lock()

    def add_pure_function(self, func: Any) -> PureFunction:
        """Decorator: make ``func`` a memoized pure function of this cloud."""
        fn = PureFunction(func, self)
        self.functions.append(fn)
        return fn

    # ------------------------------------------------------------------ backend interface

    def _compute_here(self, fn: PureFunction, call: bytes, kwargs: dict) -> Any:
        """Run a missed call in this process, store its result durably, return it (even when
        the store is full: it is then only said that the result was not kept).

        The call's lease is held from before the function runs until its result is committed,
        so another process (or thread) of this home missing the same call waits for the result
        instead of computing it too; this one waits likewise when another holds the lease
        (except in a worker, see :mod:`pythagoras_p2p.store.leases`).

        Whatever the function raises propagates as-is, as from calling a plain function, and
        nothing is stored: a ``sys.exit(3)`` inside it ends this process like any
        ``sys.exit(3)`` would. (Run in a worker, the same call fails with a
        :class:`~pythagoras_p2p.errors.RemoteError` instead: see ``rebuild_exception``.)
        """
        owner = object()
        found = self._leases.claim(call, owner, lambda: self.store.get_result(call), MISSING,
                                   wait=not in_worker())
        if found is not MISSING:
            return found
        try:
            return self._compute_and_store(fn, call, kwargs)
        finally:
            self._leases.release([call], owner)

    def _compute_and_store(self, fn: PureFunction, call: bytes, kwargs: dict) -> Any:
        started = time.time()
        t0 = time.perf_counter()
        value = fn.__pythagoras_function__(**kwargs)
        duration = time.perf_counter() - t0
        parts = pack_parts(value, what=f"result of {fn.name}")  # large ones are not joined
        meta = result_meta(fn.name, fn.fingerprint, started, duration, worker="caller")
        try:
            self.store.put_results([(call, value_address(value), parts, meta)])
        except StoreFullError as exc:
            warn_not_stored(fn.name, 1, exc)
        return value

    def _register_function(self, fn: PureFunction, identity: Identity) -> None:
        """Put the function into the store once per fingerprint, so workers can load it by
        fingerprint: pickled with the values that fingerprint was computed from."""
        fp = identity.fp
        if fp not in self._registered:
            if self.store.get_function(fp) is None:
                self.store.put_function(fp, fn.record(identity))
            self._registered.add(fp)

    def _run(self, fn: PureFunction, calls: Iterable[dict], *, return_exceptions: bool,
             progress: bool | None) -> list:
        return run_calls(self, fn, calls, return_exceptions=return_exceptions, progress=progress)

    def _keep_argument(self, address: bytes, name: str, value: Any, written: list) -> None:
        """A large argument of a task: kept in the store for this boot only (the caller has it
        anyway), where workers and peers read it by address, and held while the calls run (a
        copy another caller made is shared, not dropped under us); ``written`` collects the
        copies held here, let go of when the calls are over."""
        if self.store.keep_transient(address, lambda: pack_parts(value, what=f"argument {name!r}")):
            written.append(address)

    def _release_values(self, addresses: list) -> None:
        """The calls that read these transient argument copies are over: drop them."""
        self.store.drop_transient(addresses)

    def _dispatch(self, tasks: Iterable, count: int):  # pragma: no cover - every backend has one
        raise NotImplementedError

    def _lookup_elsewhere(self, calls: list[bytes], *, before_running: bool = False) -> dict[bytes, Any]:
        """Results of ``calls`` held somewhere other than the local store (none, here)."""
        return {}

    def _store_results(self, records: list) -> None:
        """Store results that arrived from workers (durably, before they are returned)."""
        self.store.put_results(records)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop this cloud's worker processes and connections (the store stays open)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(home={str(self.home)!r})"


def _choose_backend(connection: dict, home: Any = None) -> type:
    """The backend ``PCloud(...)`` stands for; see ``parse_connection``."""
    from .local import LocalCloud

    if connection["mode"] == "local":
        return LocalCloud
    from .swarm import SwarmCloud

    if connection["mode"] == "peers":
        return SwarmCloud
    home = home_dir(home or connection["home"])
    if _swarm_answers(home, connection["key"]):
        log.info("using the swarm through this machine's node (home %s)", home)
        return SwarmCloud
    if connection["discovery"] == "mdns" and _member_on_mdns(home, connection["key"]):
        log.info("using the swarm found on mDNS (this machine runs no node)")
        return SwarmCloud
    log.info("no swarm node answers for %s: running on the embedded default (this machine's "
             "store and worker processes)", home)
    return LocalCloud


MDNS_WAIT = 2.0  # seconds PCloud() listens on mDNS for a member when this machine has no node


def _member_on_mdns(home: Any, key_path: Any) -> bool:
    """True if this home holds a swarm key and a member of that swarm is announced on mDNS."""
    from ..net.security import SecurityError, load_key

    try:
        key = load_key(home, key_path)
    except SecurityError:
        return False
    if key is None:
        return False
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


def _swarm_answers(home: Any, key_path: Any) -> bool:
    """True if this home holds a swarm key and its node answers a probe."""
    from ..net.nodefile import local_node_address

    node = local_node_address(home)
    if node is None:
        return False
    from ..net.rpc import NodeUnreachable, endpoint, request
    from ..net.security import SecurityError, load_key
    from ..net.wire import WireError

    try:
        key = load_key(home, key_path)
        if key is None:
            return False
        request(endpoint(*node), key, "probe", timeout=1.0)
    except (NodeUnreachable, SecurityError, WireError) as exc:
        log.info("this machine's node at %s:%d does not answer (%s)", node[0], node[1], exc)
        return False
    return True


_process: dict[str, Any] = {"cloud": None, "in_worker": False}


def enter_worker(home: str) -> PCloud:
    """Called once by a worker process: its clouds run nested calls inline, in the worker."""
    from .local import LocalCloud

    _process["in_worker"] = True
    _process["cloud"] = LocalCloud(home=home, connection="local")
    return _process["cloud"]


def in_worker() -> bool:
    return _process["in_worker"]


def process_cloud() -> PCloud:
    """The cloud that pure functions unpickled in this process attach to."""
    cloud = _process["cloud"]
    if cloud is None:
        from .local import LocalCloud

        cloud = _process["cloud"] = LocalCloud(connection="local")
    return cloud
