"""Recording and checking run-time inputs (identity/inputs.py), and the store's ``traced`` table."""

from __future__ import annotations

import os
import threading

from pythagoras_p2p.identity import inputs, traces
from pythagoras_p2p.store.core import MISSING, open_store
from pythagoras_p2p.store.packing import pack_parts


def _record(body):
    rec = inputs.start()
    try:
        body()
    finally:
        trace = inputs.stop(rec)
    return trace


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_files_read_and_variables_read_are_recorded(tmp_path, monkeypatch):
    data = tmp_path / "a.txt"
    data.write_text("abc")
    monkeypatch.setenv("TRACE_A", "1")
    monkeypatch.delenv("TRACE_B", raising=False)

    def body():
        _read(data)
        _read(data)  # once is enough
        os.environ.get("TRACE_A"), os.getenv("TRACE_B"), "TRACE_C" in os.environ
        os.environ.get("PYTHAGORAS_ANYTHING")  # the library's own settings are not inputs

    trace = _record(body)
    assert list(trace["files"]) == [str(data)] and trace["files"][str(data)][1] == 3
    assert trace["env"] == {"TRACE_A": "1", "TRACE_B": None, "TRACE_C": None}
    assert inputs.holds(trace)
    monkeypatch.setenv("TRACE_B", "")
    assert not inputs.holds(trace)
    assert inputs.changed(trace) == ["environment variable TRACE_B was set"]


def test_nothing_is_recorded_without_a_recording_or_on_other_threads(tmp_path):
    data = tmp_path / "a.txt"
    data.write_text("abc")
    assert _record(lambda: None) is None
    _read(data)  # no recording on this thread: nothing to record into
    other = threading.Thread(target=_read, args=(data,))
    assert _record(lambda: (other.start(), other.join())) is None


def test_writes_sources_the_interpreter_and_absent_files_are_told_apart(tmp_path):
    out = tmp_path / "out.txt"
    gone = tmp_path / "gone.txt"

    def body():
        with open(out, "w") as f:
            f.write("x")
        _read(out)  # its own output
        _read(os.__file__)  # the standard library
        _read(inputs.__file__)  # a source under sys.path
        with open("/proc/self/status") as f:
            f.read()
        try:
            _read(gone)
        except FileNotFoundError:
            pass

    trace = _record(body)
    assert trace == {"files": {str(gone): None}}
    assert inputs.holds(trace)
    gone.write_text("now here")
    assert not inputs.holds(trace) and inputs.changed(trace) == [f"file {gone} appeared"]


def test_a_rewrite_that_keeps_size_and_mtime_is_seen(tmp_path, monkeypatch):
    data = tmp_path / "a.txt"
    data.write_text("aaaa")
    st = os.stat(data)
    old = st.st_mtime_ns - 10_000_000_000
    os.utime(data, ns=(old, old))
    monkeypatch.setattr(traces, "RACY_NS", 0)  # trust the stat fields as if the file were old
    trace = _record(lambda: _read(data))
    assert trace["files"][str(data)][2] == old  # the stat fast path is kept
    assert inputs.holds(trace)
    data.write_text("bbbb")  # same size, then the same mtime again: only the ctime differs
    os.utime(data, ns=(old, old))
    assert not inputs.holds(trace)


def test_same_bytes_written_again_hold_and_racy_stats_are_hashed(tmp_path):
    data = tmp_path / "a.txt"
    data.write_text("abc")
    trace = _record(lambda: _read(data))
    assert trace["files"][str(data)][2:] == [0, 0, 0, 0]  # just written: hashed when checked
    data.write_text("abc")
    assert inputs.holds(trace)
    data.write_text("abd")
    assert not inputs.holds(trace)


def test_a_malformed_trace_never_holds():
    assert not inputs.holds({"files": {"/x": "nonsense"}})
    assert not inputs.holds({"env": 3})
    assert not inputs.holds_raw(b"{not json")


def test_nested_recordings_and_checked_hits_reach_the_caller_s_trace(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("a")
    b.write_text("b")
    monkeypatch.setenv("TRACE_A", "1")
    inner = _record(lambda: _read(a))

    def outer():
        _record(lambda: _read(b))  # a nested call computed here
        assert inputs.holds(inner)  # a nested call answered from the store

    trace = _record(outer)
    assert set(trace["files"]) == {str(a), str(b)}


def _put(store, call, value, trace=None):
    meta = {"function": "f"}
    if trace is not None:
        meta["inputs"] = trace
    from pythagoras_p2p.identity.encoding import value_address

    store.put_results([(call, value_address(value), pack_parts(value, what="v"), meta)])


def test_the_store_answers_a_traced_result_only_while_its_trace_holds(home, tmp_path):
    store = open_store(home)
    data = tmp_path / "a.txt"
    data.write_text("abc")
    trace = _record(lambda: _read(data))
    calls = [bytes([i]) * 32 for i in range(3)]
    _put(store, calls[0], "traced", trace)
    _put(store, calls[1], "plain")
    assert store.get_result(calls[0]) == "traced"
    assert store.results_of(calls) == ["traced", "plain", MISSING]
    data.write_text("abd")
    assert store.get_result(calls[0]) is MISSING
    assert store.results_of(calls) == [MISSING, "plain", MISSING]
    assert store.get_results(calls) == {calls[1]: "plain"}
    _put(store, calls[0], "again")  # computed again, reading nothing now: its old trace goes
    assert store.get_result(calls[0]) == "again"
    assert store.env.lookup(calls[0]).trace is None
    _put(store, calls[2], "traced", trace)
    from pythagoras_p2p.store.listing import forget

    assert forget(store, [calls[2]]) == 1  # forgetting a result forgets its trace
    assert store.env.lookup(calls[2]) is None


def test_listed_directories_are_recorded_but_not_those_the_call_made(tmp_path):
    import glob
    import importlib
    import tempfile

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.csv").write_text("1")

    def body():
        sorted(glob.glob(str(folder / "*.csv")))
        importlib.invalidate_caches()  # the import system lists sys.path entries again
        try:
            importlib.import_module("no_such_module_anywhere")
        except ImportError:
            pass
        with tempfile.TemporaryDirectory(dir=tmp_path) as scratch:  # made by the call
            os.listdir(scratch)

    trace = _record(body)
    assert list(trace) == ["dirs"] and list(trace["dirs"]) == [str(folder)]
    assert inputs.holds(trace)
    (folder / "a.csv").write_text("2")  # a file's content is not its directory's
    assert inputs.holds(trace)
    (folder / "b.csv").write_text("3")
    assert not inputs.holds(trace)
    assert inputs.changed(trace) == [f"directory {folder} changed"]
    (folder / "b.csv").unlink()
    assert inputs.holds(trace)  # the same names again


def test_bulk_reads_check_traces_once_any_result_has_one(home, tmp_path):
    store = open_store(home)
    data = tmp_path / "a.txt"
    data.write_text("abc")
    calls = [bytes([i]) * 32 for i in range(40)]
    for i, call in enumerate(calls[:30]):
        _put(store, call, i)
    assert store.results_of(calls) == [*range(30), *[MISSING] * 10]  # no trace anywhere
    _put(store, calls[30], "traced", _record(lambda: _read(data)))
    assert store.results_of(calls)[29:32] == [29, "traced", MISSING]
    data.write_text("abd")
    assert store.results_of(calls)[29:32] == [29, MISSING, MISSING]


def test_threads_a_call_starts_record_into_its_trace(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    paths = [tmp_path / f"{i}.txt" for i in range(4)]
    for path in paths:
        path.write_text(str(path))
    monkeypatch.setenv("TRACE_T", "t")

    def body():
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(_read, paths))
            pool.submit(os.environ.get, "TRACE_T").result()

    trace = _record(body)
    assert set(trace["files"]) == {str(p) for p in paths} and trace["env"] == {"TRACE_T": "t"}
