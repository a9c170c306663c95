"""A hit behaves like a miss: large arrays read from the store (a stored result, an argument as
a worker sees it) are writable like the values that were stored, and writing one changes
neither the stored bytes nor what any other reader sees. A result is stored only under the
address of the values its call ran with, even when another thread rebinds a global meanwhile."""

from __future__ import annotations

import logging
import sys
import threading

import numpy as np
import pytest
from helpers import run_python

from pythagoras_p2p import kw_args
from pythagoras_p2p.defaults import INLINE_VALUE_LIMIT
from pythagoras_p2p.errors import PythagorasError
from pythagoras_p2p.store.core import MISSING
from pythagoras_p2p.store.packing import pack, unpack

N = 100_000  # 800 kB of float64: a file of its own in the store

SCRIPT = """
import numpy as np
from pythagoras_p2p import LocalCloud

cloud = LocalCloud(home={home!r}, workers=1)

@cloud.add_pure_function
def ones(*, n):
    return np.ones(n)

first = ones(n={n})
print("stored" if ones.lookup(n={n}) is not None else "absent", first.flags.writeable)
first += 1
again = ones(n={n})
print(again.flags.writeable, float(again.sum()))
again[:] = 7
print(float(ones(n={n}).sum()))
cloud.close()
"""


def test_a_large_result_is_writable_on_the_miss_and_on_the_hit_of_a_fresh_process(home):
    script = SCRIPT.format(home=str(home), n=N)
    miss = run_python(script).stdout.split("\n")
    hit = run_python(script).stdout.split("\n")  # a fresh process: its first call is a hit
    assert miss[0] == "stored True"
    assert hit[0] == "stored True"  # writable on the hit: `a += 1` works as on the miss
    for out in (miss, hit):
        assert out[1] == f"True {float(N)}"  # a write to one result is seen by no later hit
        assert out[2] == f"{float(N)}"


def ones_frame(*, n):
    import pandas as pd

    return pd.DataFrame({"a": np.ones(n), "b": np.arange(n)})


def test_a_large_dataframe_hit_can_be_written_like_the_miss(cloud):
    pytest.importorskip("pandas")
    f = cloud.add_pure_function(ones_frame)
    f(n=N)
    hit = f(n=N)
    assert f.lookup(n=N) is not None
    hit.loc[0, "a"] = 5.0  # raised "assignment destination is read-only" on the hit
    hit["b"] += 1
    again = f(n=N)
    assert again.loc[0, "a"] == 1.0 and again["b"].iloc[0] == 0


def bump_and_sum(*, x, k=0):
    x += 1  # in place: the argument as the worker sees it
    return float(x.sum())


def test_a_large_argument_is_writable_in_a_worker_and_private_to_its_call(cloud):
    f = cloud.add_pure_function(bump_and_sum)
    x = np.zeros(N)
    assert f(x=x) == float(N)  # a local call: the caller's own array
    x[:] = 0
    assert f.sync_remote(x=x, k=1) == float(N)  # raised "output array is read-only" in a worker
    # Every call reads its own view: a write made by one is seen by no other.
    assert f.sync_parallel([kw_args(x=x, k=k) for k in range(2, 6)]) == [float(N)] * 4
    assert not x.any()


def test_a_large_value_unpacked_from_read_only_bytes_is_writable():
    array = np.arange(N, dtype=np.float64)
    blob = pack(array)  # bytes, as a value arrives in a message
    assert len(blob) > INLINE_VALUE_LIMIT
    back = unpack(blob)
    assert back.flags.writeable
    back += 1
    assert np.array_equal(unpack(blob), array)
    assert not unpack(blob, writable=False).flags.writeable  # only looked at: not copied


FACTOR = 2


def scaled(*, x):
    return x * FACTOR


def test_a_global_rebound_by_another_thread_during_a_local_call_stores_nothing(cloud, monkeypatch,
                                                                               caplog):
    f = cloud.add_pure_function(scaled)
    before = f.address(x=5)  # the call's address, for FACTOR = 2
    started, rebound = threading.Event(), threading.Event()
    plain = f.__pythagoras_function__

    def slow(**kwargs):  # the function, entered: another thread rebinds FACTOR meanwhile
        started.set()
        assert rebound.wait(30)
        return plain(**kwargs)

    def rebind():
        assert started.wait(30)
        monkeypatch.setattr(sys.modules[__name__], "FACTOR", 3)
        rebound.set()

    monkeypatch.setattr(f, "__pythagoras_function__", slow)
    thread = threading.Thread(target=rebind)
    thread.start()
    with caplog.at_level(logging.WARNING):
        assert f(x=5) == 15  # returned: it is what the function computed
    thread.join()
    assert cloud.store.get_result(before) is MISSING  # not 15 under the address of FACTOR = 2
    assert any("changed while it ran" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(f, "__pythagoras_function__", plain)
    assert f(x=5) == 15 and cloud.store.get_result(f.address(x=5)) == 15  # stored for FACTOR = 3
    monkeypatch.setattr(sys.modules[__name__], "FACTOR", 2)
    assert f(x=5) == 10


def test_a_global_rebound_while_a_call_is_sent_to_workers_is_never_stored_under_the_old_address(
        cloud, monkeypatch):
    import pythagoras_p2p.function as function

    f = cloud.add_pure_function(scaled)
    before = f.address(x=7)  # for FACTOR = 2
    make_record = function.function_record

    def racing_record(fn, *args):  # the record is pickled; another thread rebinds FACTOR just after
        record = make_record(fn, *args)
        monkeypatch.setattr(sys.modules[__name__], "FACTOR", 3)
        return record

    monkeypatch.setattr(function, "function_record", racing_record)
    try:
        got = f.sync_remote(x=7)
    except PythagorasError as exc:  # said, and nothing run with values of another address
        assert "changed" in str(exc)
        got = None
    assert got in (None, 14)  # run with the values of its address, or not at all
    assert cloud.store.get_result(before) in (MISSING, 14)
    monkeypatch.setattr(function, "function_record", make_record)
    assert f.sync_remote(x=7) == 21  # FACTOR = 3: a new address, the new value
    assert cloud.store.get_result(before) in (MISSING, 14)
