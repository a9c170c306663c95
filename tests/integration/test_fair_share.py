"""A node serves the queued calls of different callers in turn, and counts speculative copies.

Raw members (DEALER sockets) of one node with two workers: one floods it with calls, another
sends a few a moment later; the second's calls are done long before the first's queue is.
"""

from __future__ import annotations

import pickle
import time

from node_harness import dealer, wait_for

from pythagoras_p2p.function import PureFunction, function_record
from pythagoras_p2p.net import wire


def nap(*, who, i, pause):
    import time

    time.sleep(pause)
    return i


class Member:
    """A raw connection that sends ``nap`` calls and collects when each result came."""

    def __init__(self, zctx, node, who: str):
        self.sock = dealer(zctx, node, key=node.key)
        self.who = who
        self.fn = PureFunction(nap, None)
        self.fp, record = function_record(self.fn)
        self.sock.send_multipart(wire.build("function", 1, [record], fp=self.fp))
        self.done: dict[int, float] = {}  # request id -> when its result came
        self.errors: dict[int, str] = {}
        self.rid = 100

    def run(self, count: int, pause: float, **fields) -> list[int]:
        rids = []
        for i in range(count):
            self.rid += 1
            kwargs = {"who": self.who, "i": i, "pause": pause}
            self.sock.send_multipart(wire.build(
                "run", self.rid, [pickle.dumps(kwargs, protocol=5)], fp=self.fp,
                call=self.fn.address(**kwargs), label=f"nap {i}", refs=[], **fields))
            rids.append(self.rid)
        return rids

    def read(self) -> None:
        while self.sock.poll(0):
            msg = wire.parse(self.sock.recv_multipart())
            messages = [msg] if msg.op != "many" else [wire.parse(m) for m in wire.unbundle(msg)]
            for m in messages:
                if m.op == "result":
                    self.done[m.id] = time.monotonic()
                elif m.op == "error":
                    self.errors[m.id] = m.fields["code"]


def test_a_second_caller_is_served_in_turn_not_after_the_first_callers_queue(start_node, zctx):
    node = start_node(workers=2)
    flood, few = Member(zctx, node, "flood"), Member(zctx, node, "few")
    flooded = flood.run(30, 0.2)  # 3 s of work for two workers
    wait_for(lambda: (flood.read(), node.status()["workers_busy"] == 2)[1], 10,
             message="the node to run the first caller's calls")
    sent = time.monotonic()
    mine = few.run(4, 0.2)

    def both_callers_seen():  # the 4 calls reach the node in a moment, not at once
        callers = node.status()["callers"]
        return sorted(c["running"] + c["queued"] + c["done"] for c in callers) == [4, 30]

    wait_for(both_callers_seen, 10, interval=0.01, message="each caller's calls at the node")

    def all_done():
        flood.read()
        few.read()
        return all(rid in few.done for rid in mine)

    wait_for(all_done, 10, interval=0.01, message="the second caller's calls")
    took = max(few.done[rid] for rid in mine) - sent
    assert took < 2.0, f"the second caller waited {took:.2f} s behind the first one's queue"
    assert len([r for r in flooded if r in flood.done]) < 20  # most of the flood still queued
    flood.sock.send_multipart(wire.build("cancel", 0, calls=[
        flood.fn.address(who="flood", i=i, pause=0.2) for i in range(30)]))


def test_speculative_copies_only_on_an_idle_worker_and_counted(start_node, zctx):
    node = start_node(workers=1)
    first, copier = Member(zctx, node, "first"), Member(zctx, node, "copier")
    first.run(1, 1.0)
    wait_for(lambda: node.status()["workers_busy"] == 1, 10, message="the worker to be busy")
    refused = copier.run(1, 0.1, speculative=True)
    wait_for(lambda: (copier.read(), refused[0] in copier.errors)[1], 10,
             message="the copy to be refused")
    assert copier.errors[refused[0]] == wire.ERR_BUSY
    wait_for(lambda: (first.read(), len(first.done) == 1)[1], 10, message="the first call")
    taken = copier.run(1, 0.1, speculative=True)
    wait_for(lambda: (copier.read(), taken[0] in copier.done)[1], 10, message="the copy to run")
    status = node.status()
    assert (status["speculative"], status["speculative_won"]) == (1, 1)


def test_a_node_started_with_no_speculate_refuses_copies(start_node, zctx):
    node = start_node(workers=1, extra=("--no-speculate",))
    copier = Member(zctx, node, "copier")
    refused = copier.run(1, 0.0, speculative=True)
    wait_for(lambda: (copier.read(), refused[0] in copier.errors)[1], 10,
             message="the copy to be refused")
    assert node.status()["owner"]["speculate"] is False


CLIENT = '''
import os, sys, time
from pythagoras_p2p import PCloud

cloud = PCloud(connection=sys.argv[1], home=sys.argv[2])

@cloud.add_pure_function
def nap(*, who, i, pause):
    import time
    time.sleep(pause)
    return i

who, count, go = sys.argv[3], int(sys.argv[4]), sys.argv[5]
while not os.path.exists(go):
    time.sleep(0.01)
started = time.monotonic()
results = nap.sync_parallel([{"who": who, "i": i, "pause": 0.2} for i in range(count)])
assert results == list(range(count))
print(f"took {time.monotonic() - started:.3f}", flush=True)
cloud.close()
'''


def test_a_teammates_few_calls_pass_another_ones_four_processes_of_many(start_node, tmp_path):
    import subprocess
    import sys

    from node_harness import copy_key, node_env

    first = start_node("first", workers=2)
    second = start_node("second", workers=2, key_from=first.home)
    connection = f"{first.connection},{second.connection}"
    go_a, go_b = tmp_path / "go-a", tmp_path / "go-b"

    def client(name: str, count: int, go) -> subprocess.Popen:
        home = tmp_path / name
        copy_key(first.home, home)
        return subprocess.Popen([sys.executable, "-c", CLIENT, connection, str(home), name,
                                 str(count), str(go)], env=node_env(home), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    many = [client(f"a{n}", 75, go_a) for n in range(4)]  # 300 calls of 0.2 s
    few = client("b", 4, go_b)
    try:
        go_a.touch()
        wait_for(lambda: first.status()["workers_busy"] == 2 and second.status()["workers_busy"] == 2,
                 30, message="both nodes to run the first teammate's calls")
        time.sleep(1.0)  # the scenario: the second teammate comes a second later
        go_b.touch()
        out, err = few.communicate(timeout=60)
        assert few.returncode == 0, err
        took = float(out.split()[-1])
        assert took < 2.0, f"4 calls of 0.2 s took {took:.2f} s behind 300 others"
        assert any(c["queued"] for c in first.status()["callers"] + second.status()["callers"])
    finally:
        for proc in many + [few]:
            proc.kill()
            proc.communicate()
