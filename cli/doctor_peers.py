"""``doctor``'s peer checks: can each peer be reached, how fast, is its clock right, and do
its Python and packages let it share results with this machine?

The peers are those this machine's node knows (itself included: the node may run another
interpreter than this command) and those named with ``--peer``. A plain TCP connection first
tells a name that does not resolve from a refusal and from silence; then a few ``probe``
requests asking ``about`` (see :mod:`pythagoras_p2p.net.versions`) measure the round trip and
the clock, and bring the peer's Python, release and package versions to compare. Results are
shared only between machines whose calls get the same address: the same Python minor version
(3.11 and 3.12 never share), and the same versions of the packages a function uses.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from .findings import Finding

__all__ = ["check_peers", "SKEW", "CONNECT_TIMEOUT"]

#: A clock further off than this is worth a warning (seconds).
SKEW = 2.0
#: Seconds a TCP connection (then a probe) may take before the peer counts as silent.
CONNECT_TIMEOUT = 3.0
_PROBES = 3
_SHOWN = 12  # differing packages named in a finding


def check_peers(home: Path, key, node: dict | None, named: tuple[str, ...]) -> list[Finding]:
    from pythagoras_p2p.errors import ConfigurationError

    targets = _known_peers(key, node)
    for text in named:
        try:
            from pythagoras_p2p.clouds.connection import parse_peers

            targets += [(host, port, f"{host}:{port}") for host, port in parse_peers(text)]
        except ConfigurationError as exc:
            return [Finding("peer", "fail", str(exc), "write --peer HOST or HOST:PORT")]
    if not targets:
        return [Finding("peer", "info", "no peers to check: this machine's node is not running "
                        "and no --peer was given")]
    from pythagoras_p2p.net.versions import installed

    here = installed()
    return [_check_one(host, port, label, key, here) for host, port, label in targets]


def _known_peers(key, node: dict | None) -> list[tuple[str, int, str]]:
    """(host, port, label) of this machine's node and every peer it knows."""
    if node is None:
        return []
    from pythagoras_p2p.errors import PythagorasError
    from pythagoras_p2p.net.rpc import request

    found = []
    host, _, port = node["endpoint"].removeprefix("tcp://").rpartition(":")
    found.append((host.strip("[]"), int(port), f"this machine's node ({host}:{port})"))
    try:
        reply = request(node["endpoint"], key, "status", timeout=CONNECT_TIMEOUT)
    except PythagorasError:
        return found  # said by the probe of this machine's node
    for peer in reply.fields.get("peers", []):
        if peer.get("self"):
            continue
        address = str(peer.get("address", ""))
        host, _, port = address.rpartition(":")
        if host and port.isdigit():
            found.append((host.strip("[]"), int(port), f"{peer.get('id', '?')} ({address})"))
    return found


def _reach(host: str, port: int) -> Finding | None:
    """A finding when no TCP connection can be made (None when one can)."""
    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            return None
    except socket.gaierror as exc:
        return Finding("peer", "fail", f"{where}: no such host ({exc.strerror})",
                       "check the name, or use the machine's IP address", {"address": where})
    except ConnectionRefusedError:
        return Finding("peer", "fail", f"{where}: the connection was refused: the machine "
                       f"answers but nothing listens on port {port}",
                       "start the node there (`pythagoras-node start`), on that port",
                       {"address": where})
    except TimeoutError:
        return Finding("peer", "fail", f"{where}: no answer in {CONNECT_TIMEOUT:g} s",
                       f"is the machine up and on this network? Is TCP port {port} open in "
                       f"its firewall?", {"address": where})
    except OSError as exc:
        return Finding("peer", "fail", f"{where}: unreachable ({exc.strerror or exc})",
                       "check the network between the two machines", {"address": where})


def _probe(host: str, port: int, key, packages: list[str]) -> tuple[list, dict] | str:
    """Rounds of (sent, received) monotonic-wall pairs and the last answer; or why not."""
    import zmq

    from pythagoras_p2p.net import wire
    from pythagoras_p2p.net.rpc import client_socket
    from pythagoras_p2p.net.sockets import endpoint

    server = key.server_key(host, port, context=zmq.Context.instance())
    if server is None:
        return "no member node's key answers there"
    sock = client_socket(zmq.Context.instance(), key, server)
    rounds: list = []
    answer: dict = {}
    try:
        sock.connect(endpoint(host, port))
        for rid in range(1, _PROBES + 1):
            sent = time.time()
            sock.send_multipart(wire.build("probe", rid, [], about=True,
                                           packages=packages if rid == 1 else []))
            while True:
                if not sock.poll(int(CONNECT_TIMEOUT * 1000 * (2 if rid == 1 else 1))):
                    return "no reply"
                reply = wire.parse(sock.recv_multipart())
                if reply.id == rid:
                    break
            if reply.op == "error":
                return reply.fields.get("message", "an error")
            rounds.append((sent, time.time(), reply.fields.get("time")))
            answer = answer or dict(reply.fields)
    finally:
        sock.close(0)
    return rounds, answer


def _check_one(host: str, port: int, label: str, key, here: dict[str, str]) -> Finding:
    from pythagoras_p2p import __version__
    from pythagoras_p2p.net.wire import PROTOCOL_VERSION, PYTHON_VERSION

    unreachable = _reach(host, port)
    if unreachable is not None:
        unreachable.message = f"{label}: {unreachable.message.split(': ', 1)[1]}"
        return unreachable
    probed = _probe(host, port, key, sorted(here))
    if isinstance(probed, str):
        return Finding("peer", "fail", f"{label}: port {port} takes connections but does not "
                       f"answer as a node of this swarm ({probed}): a node of another "
                       f"swarm, one that does not (yet) know this machine as a member, or "
                       f"another program",
                       "make that machine a member (`pythagoras-node invite` on an admin, "
                       "`pythagoras-node join --force TOKEN` there, then restart its node); "
                       "`pythagoras-node members` lists the members", {"address": f"{host}:{port}"})
    rounds, answer = probed
    sent, received, their = min(rounds, key=lambda r: r[1] - r[0])
    rtt = received - sent
    skew = (their - (sent + received) / 2) if isinstance(their, (int, float)) else None
    details = {"address": f"{host}:{port}", "node": answer.get("node"),
               "round_trip_ms": round(rtt * 1000, 2),
               "clock_skew_s": None if skew is None else round(skew, 3),
               "python": answer.get("python"), "release": answer.get("release")}
    if answer.get("protocol") not in (None, PROTOCOL_VERSION):
        return Finding("peer", "fail", f"{label}: speaks protocol {answer['protocol']}, this "
                       f"machine {PROTOCOL_VERSION}: they cannot work together",
                       "install the same pythagoras_p2p release on both", details)
    if answer.get("python") not in (None, PYTHON_VERSION):
        return Finding("peer", "fail", f"{label}: runs Python {answer['python']}, this machine "
                       f"Python {PYTHON_VERSION}: results are never shared between Python "
                       f"minor versions, and it takes no calls from here",
                       f"use Python {PYTHON_VERSION} on every machine of the swarm", details)
    problems, fixes = [], []
    theirs = answer.get("versions") or {}
    differ = {n: [v, theirs[n]] for n, v in sorted(here.items())
              if theirs.get(n) is not None and theirs[n] != v}
    missing = sorted(n for n in here if n in theirs and theirs[n] is None)
    details.update(differing_packages=differ, missing_there=missing)
    if differ:
        shown = ", ".join(f"{n} {a} here, {b} there" for n, (a, b) in list(differ.items())[:_SHOWN])
        more = f" and {len(differ) - _SHOWN} more" if len(differ) > _SHOWN else ""
        problems.append(f"package versions differ ({shown}{more}): a call of a function that "
                        f"uses one of them has another address there, so each machine computes "
                        f"and keeps its own result")
        fixes.append("install the same versions on both (pip install NAME==VERSION)")
    if answer.get("release") not in (None, __version__):
        problems.append(f"it runs pythagoras_p2p {answer['release']}, this machine {__version__}")
        fixes.append("install the same pythagoras_p2p release on both")
    if skew is not None and abs(skew) > SKEW:
        problems.append(f"its clock is {abs(skew):.1f} s {'ahead of' if skew > 0 else 'behind'} "
                        f"this machine's: times in status, lookup and the logs disagree, and "
                        f"`cache gc --older-than` judges by each machine's clock")
        fixes.append("keep both clocks synchronized (NTP: `timedatectl set-ntp true`)")
    summary = (f"{label}: reachable, round trip {rtt * 1000:.1f} ms, clock "
               + ("unknown" if skew is None else f"{skew * 1000:+.0f} ms")
               + f", Python {answer.get('python', '?')}")
    if missing:
        summary += (f"; {len(missing)} package(s) installed here are not there (calls that "
                    f"need them must say so with requires=)")
    if problems:
        return Finding("peer", "warn", f"{summary}; " + "; ".join(problems), "; ".join(fixes),
                       details)
    return Finding("peer", "ok", summary + ", the same packages", details=details)
