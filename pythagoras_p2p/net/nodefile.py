"""Files a node keeps in its home besides the store: its identity and where it listens.

``node.id`` is made on the first start and never copied: two machines given the same files
are two nodes. ``node.json`` says where the running node of this home listens (and its pid), so
``pythagoras-node status``/``stop`` and clients of the same home find it; it is written once the
node serves and removed when it stops. Both the daemon and clients read it, so it lives here.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

__all__ = ["node_identity", "write_node_file", "read_node_file", "remove_node_file",
           "local_node_address"]

NODE_FILE = "node.json"


def node_identity(home: Path) -> str:
    path = Path(home) / "node.id"
    try:
        text = path.read_text().strip()
        if text:
            return text
    except FileNotFoundError:
        pass
    node_id = secrets.token_hex(6)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(node_id + "\n")
    os.replace(tmp, path)
    return node_id


def write_node_file(home: Path, info: dict) -> None:
    """Record where this process, the node of ``home``, listens (with its start time, so that
    a later process given the same pid is not mistaken for it)."""
    path = Path(home) / NODE_FILE
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**info, "pid_started": _started(os.getpid())}, indent=1) + "\n")
    os.replace(tmp, path)


def _started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None if there is none."""
    import psutil

    try:
        return round(psutil.Process(pid).create_time(), 2)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


_REQUIRED = {"pid": int, "port": int, "endpoint": str, "pid_started": float}


def read_node_file(home: Path) -> dict | None:
    """Where this home's node listens, or None if no node runs: a file left by a node that died
    (its pid gone, or now another process's) or a damaged one is ignored."""
    try:
        info = json.loads((Path(home) / NODE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(info, dict) or not all(
            isinstance(info.get(k), t) and not isinstance(info.get(k), bool) for k, t in _REQUIRED.items()):
        return None
    if _started(info["pid"]) != info["pid_started"]:
        return None
    return info


def remove_node_file(home: Path) -> None:
    path = Path(home) / NODE_FILE
    try:
        info = json.loads(path.read_text())
        if info.get("pid") == os.getpid():
            path.unlink()
    except (FileNotFoundError, ValueError):
        pass


def local_node_address(home: Path) -> tuple[str, int] | None:
    """(host, port) of the node running for ``home``, if one does."""
    info = read_node_file(home)
    if info is None:
        return None
    endpoint = str(info.get("endpoint", ""))
    host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return None
