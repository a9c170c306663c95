"""What ``pythagoras-node dashboard`` shows, gathered from the nodes: one snapshot a second.

This machine's node is asked for its ``status`` once a second while a page is open (it knows
every live member from their heartbeats, the runs its callers report, the members that left
or were lost, and the swarm's last minutes); every live member is asked for its own details
(last failures, largest functions) every :data:`DETAILS_EVERY` seconds. Requests go over the
swarm's CURVE connections, as ``pythagoras-node status`` does; nothing secret — no key, no token,
no address of a value — is in a snapshot.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from pythagoras_p2p.net import wire
from pythagoras_p2p.net.rpc import client_socket

__all__ = ["Gatherer", "DETAILS_EVERY", "snapshot"]

#: Seconds between requests for each member's own details (failures, functions).
DETAILS_EVERY = 5.0
_ANSWER_WITHIN = 2.0  # seconds a node has to answer before its socket is made anew
_SILENT = 2.5  # seconds without a heartbeat after which a member is shown silent
_RECENT = 300.0  # the window of the cache's hit rate (seconds)
_FAILURES = 20


class _Asker:
    """Requests to one node over one DEALER, answered within :data:`_ANSWER_WITHIN`."""

    def __init__(self, context: Any, key: Any, endpoint: str, server_key: bytes | None = None):
        self.context, self.key, self.endpoint = context, key, endpoint
        self.server_key = server_key  # the node's CURVE key (None: this machine's own node)
        self.sock: Any = None
        self.next_id = 1

    def ask(self, op: str, **fields: Any) -> dict | None:
        """The reply's fields, or None (no answer in time, or an error)."""
        if self.sock is None:
            self.sock = client_socket(self.context, self.key, self.server_key)
            self.sock.connect(self.endpoint)
        self.next_id += 1
        self.sock.send_multipart(wire.build(op, self.next_id, [], **fields))
        deadline = time.monotonic() + _ANSWER_WITHIN
        while (left := deadline - time.monotonic()) > 0 and self.sock.poll(int(left * 1000)):
            try:
                reply = wire.parse(self.sock.recv_multipart())
            except wire.WireError:
                continue
            if reply.id == self.next_id:
                return reply.fields if reply.op == "ok" else None
        self.close()  # a late answer must not be read as the next one's
        return None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None


class Gatherer:
    """Asks the nodes; :meth:`poll` returns the latest snapshot (see :func:`snapshot`)."""

    def __init__(self, key: Any, endpoint: str):
        import zmq

        self.key = key
        self.context = zmq.Context()
        self.local = _Asker(self.context, key, endpoint)
        self.members: dict[str, _Asker] = {}  # address -> its asker
        self.details: dict[str, tuple[float, dict]] = {}  # node id -> (when, its details)
        self.series: deque[tuple] = deque(maxlen=15 * 60 + 1)
        self.fields: list[str] = []
        self.problem = ""

    def poll(self) -> dict:
        after = self.series[-1][0] if self.series else None
        status = self.local.ask("status", detail=True, **({"series_after": after} if after else {}))
        if status is None:
            self.problem = (f"this machine's node does not answer at {self.local.endpoint}: is "
                            f"`pythagoras-node start` running for this home?")
            return {"problem": self.problem, "t": time.time()}
        self.problem = ""
        series = status.get("series") or {}
        self.fields = list(series.get("fields") or self.fields)
        self.series.extend(tuple(s) for s in series.get("samples") or () if isinstance(s, list))
        me = status["node"]
        self.details[me["id"]] = (time.monotonic(), status)
        self._ask_members(status)
        return snapshot(status, list(self.series), self.fields, self.details)

    def _ask_members(self, status: dict) -> None:
        now = time.monotonic()
        live = {row["address"]: row["id"] for row in status["peers"] if not row.get("self")}
        for address in set(self.members) - set(live):
            self.members.pop(address).close()
        for address, node in live.items():
            if now - self.details.get(node, (-DETAILS_EVERY, {}))[0] < DETAILS_EVERY:
                continue
            asker = self.members.get(address)
            if asker is None:
                host, _, port = address.rpartition(":")
                server_key = self.key.server_key(host.strip("[]"), int(port), node_id=node)
                if server_key is None:  # not on this machine's member list (yet)
                    continue
                asker = _Asker(self.context, self.key, f"tcp://{address}", server_key)
                self.members[address] = asker
            answer = asker.ask("status", detail=True, series_after=time.time())
            if answer is not None:
                self.details[node] = (now, answer)
        for node in [n for n, (at, _) in self.details.items() if now - at > 10 * DETAILS_EVERY]:
            del self.details[node]

    def close(self) -> None:
        for asker in [self.local, *self.members.values()]:
            asker.close()
        self.context.term()


def snapshot(status: dict, samples: list, fields: list[str], details: dict) -> dict:
    """The page's data: nodes, runs, cache, replication, failures and the plots' samples."""
    me = status["node"]
    names = {node: answer.get("callers_named") or {} for node, (_, answer) in details.items()}
    owners = {m["node_id"]: m.get("owner") or "" for m in status.get("members") or ()
              if isinstance(m, dict) and m.get("node_id") and not m.get("removed")}
    nodes = [_node(row, names.get(row["id"], {}), owners.get(row["id"], "")) for row in sorted(
        status["peers"], key=lambda r: (not r.get("self"), str(r.get("hostname")), r["id"]))]
    nodes += [{**_departed(row), "owner": owners.get(row["id"], "")}
              for row in status.get("departed") or ()]
    runs: dict[tuple, dict] = {}
    for _, answer in details.values():
        for run in answer.get("runs") or ():
            key = (run.get("who"), run["run"])  # a run's id is its process's: pid and number
            if key not in runs or run["done"] > runs[key]["done"]:
                runs[key] = run
    failures = sorted((f for _, a in details.values() for f in a.get("failures") or ()),
                      key=lambda f: -f["t"])[:_FAILURES]
    return {
        "t": time.time(), "swarm": me.get("swarm"), "self": me["id"], "nodes": nodes,
        "runs": sorted((_run(r) for r in runs.values()), key=lambda r: (r["who"], r["run"])),
        "cache": _cache(status["peers"], samples, fields, details),
        "replication": _replication(status["peers"]), "failures": failures,
        "series": {"fields": fields, "samples": samples},
    }


def _node(row: dict, names: dict, owner: str) -> dict:
    replication = row.get("replication") or {}
    state, why = "serving", ""
    if row.get("stopping"):
        state, why = "stopping", f"hand-over {replication.get('handover') or 'waiting'}"
    elif row.get("paused"):
        state, why = "paused", str(row["paused"])
    elif row.get("last_seen_s", 0) > _SILENT:
        state, why = "silent", f"no heartbeat for {row['last_seen_s']:.0f} s"
    return {
        "id": row["id"], "hostname": row.get("hostname") or row["address"],
        "owner": owner,
        "address": row["address"], "self": bool(row.get("self")), "state": state, "why": why,
        "since": row.get("paused_since") if state == "paused" else None,
        "busy": row.get("workers_busy", 0), "workers": row.get("workers_total", 0),
        "load": row.get("load"), "held": _held(row), "results": row.get("cache_entries", 0),
        "bytes": row.get("cache_bytes", 0), "missing": replication.get("under_replicated") or 0,
        "hit_rate": row.get("hit_rate"),
        "callers": [{"who": names.get(c["caller"]) or f"caller {c['caller']}", "queued": c.get("queued", 0),
                     "running": c.get("running", 0), "done": c.get("done", 0)}
                    for c in row.get("callers") or ()],
    }


def _departed(row: dict) -> dict:
    return {"id": row["id"], "hostname": row.get("hostname") or row["address"], "owner": "",
            "address": row["address"], "self": False, "state": row["state"],
            "why": "stopped and handed over its results" if row["state"] == "left"
            else "stopped answering (killed, crashed, or cut off)", "since": row.get("since"),
            "busy": 0, "workers": row.get("workers_total", 0), "held": "", "results": None,
            "bytes": None, "missing": 0, "hit_rate": None, "callers": []}


def _held(row: dict) -> str:
    """``gpus 1/2 memory 4.0 GB/16 GB``: the resources running calls hold, of what it has."""
    from pythagoras_p2p.resources import describe

    have, used = row.get("resources") or {}, row.get("resources_in_use") or {}
    return " ".join(f"{name} {describe(name, used.get(name, 0))}/{describe(name, amount)}"
                    for name, amount in sorted(have.items())
                    if used.get(name) or (amount and name not in ("memory", "cpus")))


def _run(run: dict) -> dict:
    total, done, elapsed = run.get("total"), run["done"], run["elapsed"]
    eta = None
    if total and done and not run.get("ended") and done < total:
        eta = round(elapsed / done * (total - done), 1)
    return {**run, "eta": eta, "rate": round(done / elapsed, 2) if elapsed else None}


def _cache(rows: list, samples: list, fields: list[str], details: dict) -> dict:
    functions: dict[str, dict] = {}
    for _, answer in details.values():
        for f in answer.get("functions") or ():
            entry = functions.setdefault(f["function"], {"function": f["function"], "results": 0,
                                                         "bytes": 0})
            entry["results"] += f["results"]
            entry["bytes"] += f["bytes"]
    hits = asked = 0
    if fields:
        t, h, c = fields.index("t"), fields.index("hits"), fields.index("calls")
        recent = [s for s in samples if s[t] >= time.time() - _RECENT]
        hits, asked = sum(s[h] for s in recent), sum(s[c] for s in recent)
    return {"results": sum(r.get("cache_entries", 0) for r in rows),
            "bytes": sum(r.get("cache_bytes", 0) for r in rows),
            "hit_rate": hits / asked if asked else None, "calls": asked, "window_s": _RECENT,
            "functions": sorted(functions.values(), key=lambda f: -f["bytes"])[:10]}


def _replication(rows: list) -> dict:
    facts = [r.get("replication") or {} for r in rows]
    return {"replicas": max((f.get("replicas") or 1 for f in facts), default=1),
            "under_replicated": sum(f.get("under_replicated") or 0 for f in facts),
            "settled": all(f.get("settled") for f in facts) if facts else False,
            "late_acks": sum(f.get("late_acks") or 0 for f in facts),
            "copies_sent": sum(f.get("copies_sent") or 0 for f in facts),
            "handovers": [{"id": r["id"], "hostname": r.get("hostname"),
                           "handover": (r.get("replication") or {}).get("handover")}
                          for r in rows if (r.get("replication") or {}).get("handover")]}
