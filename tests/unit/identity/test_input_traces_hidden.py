"""Inputs a call depends on without opening them itself (identity/inputs.py, identity/memos.py):
the stat of a path, the working directory of a relative path, ``os.environb``, a file opened
``"r+"``, and what a memo read in an earlier call of the same process."""

from __future__ import annotations

import importlib
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from pythagoras_p2p.identity import inputs


def _record(body, reach=None):
    rec = inputs.start()
    try:
        body()
    finally:
        trace = inputs.stop(rec) if reach is None else inputs.stop(rec, reach)
    return trace


def test_existence_type_size_and_mtime_checks_are_recorded(tmp_path):
    flag, data, folder = tmp_path / "flag", tmp_path / "data", tmp_path / "folder"
    data.write_text("abc")
    folder.mkdir()

    def body():
        assert not os.path.exists(flag)
        assert Path(data).is_file() and os.path.getsize(data) == 3
        assert os.stat(data).st_size == 3 and os.path.isdir(folder)

    trace = _record(body)
    assert set(trace["stats"]) == {str(flag), str(data), str(folder)}
    assert trace["stats"][str(flag)] is None and "files" not in trace
    assert inputs.holds(trace)
    (folder / "new").write_text("x")  # what a directory holds is its listing, not its stat
    assert inputs.holds(trace)
    flag.write_text("")
    assert not inputs.holds(trace) and inputs.changed(trace) == [f"path {flag} appeared"]
    flag.unlink()
    data.write_text("abcd")
    assert not inputs.holds(trace)
    assert inputs.changed(trace) == [
        f"path {data} changed (its type, size or modification time)"]


def test_a_path_the_call_checks_and_then_writes_is_its_own_output(tmp_path):
    out = tmp_path / "out.txt"

    def body():
        if not out.exists():
            out.write_text("made")
        os.makedirs(tmp_path / "made", exist_ok=True)
        os.path.islink(tmp_path / "made")

    trace = _record(body)  # makedirs checked that the folder it made "made" in exists
    assert trace == {"stats": {str(tmp_path): [stat.S_IFDIR, 0, 0]}} and inputs.holds(trace)


def test_an_lstat_is_checked_as_an_lstat(tmp_path):
    target = tmp_path / "target"
    target.write_text("x")
    link = tmp_path / "link"
    link.symlink_to(target)
    trace = _record(lambda: os.path.islink(link))
    assert list(trace) == ["lstats"] and inputs.holds(trace)
    link.unlink()
    link.write_text("x")
    assert not inputs.holds(trace)


def test_a_relative_path_records_the_working_directory(tmp_path, monkeypatch):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "d.txt").write_text(name)
    monkeypatch.chdir(tmp_path / "a")
    trace = _record(lambda: open("d.txt").close())
    assert trace["cwd"] == str(tmp_path / "a") and inputs.holds(trace)
    monkeypatch.chdir(tmp_path / "b")
    assert not inputs.holds(trace)
    assert inputs.changed(trace) == [
        f"the working directory is no longer {tmp_path / 'a'} (the call used relative paths)"]
    absolute = _record(lambda: open(tmp_path / "a" / "d.txt").close())
    assert "cwd" not in absolute
    monkeypatch.chdir(tmp_path)
    assert inputs.holds(absolute)
    assert "cwd" in _record(lambda: os.path.exists("b"))


@pytest.mark.skipif(not hasattr(os, "environb"), reason="no os.environb here")
def test_environb_reads_are_recorded_by_name(monkeypatch):
    monkeypatch.setenv("TRACE_B_MODE", "fast")
    trace = _record(lambda: (os.environb.get(b"TRACE_B_MODE"), os.environb.get(b"TRACE_B_NO")))
    assert trace == {"env": {"TRACE_B_MODE": "fast", "TRACE_B_NO": None}}
    monkeypatch.setenv("TRACE_B_MODE", "slow")
    assert not inputs.holds(trace)


def test_a_file_opened_for_reading_and_writing_is_an_input(tmp_path):
    data = tmp_path / "d.txt"
    data.write_text("abc")

    def body():
        with open(data, "r+") as f:
            f.read()

    trace = _record(body)
    assert list(trace["files"]) == [str(data)] and inputs.holds(trace)
    data.write_text("abd")
    assert not inputs.holds(trace)


MEMO_MODULE = '''
import functools

from pythagoras_p2p.identity import inputs

_CACHE = {}


@functools.lru_cache
def load(path):
    with open(path) as f:
        return f.read()


def load_dict(path):
    if path not in _CACHE:
        with open(path) as f:
            _CACHE[path] = f.read()
    return _CACHE[path]


def uses_lru(*, path, x):
    return load(path) + str(x)


def uses_dict(*, path, x):
    return load_dict(path) + str(x)


def per_path(*, path):
    with open(path) as f:
        return f.read()


TRACES = {}


@functools.lru_cache
def load_answered(key):
    assert inputs.holds(TRACES[key])  # a nested pure function answered from the store
    return key


def uses_answered(*, key, x):
    return load_answered(key) + str(x)
'''


@pytest.fixture
def memo_module(tmp_path, monkeypatch):
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "memo_helpers_mod.py").write_text(textwrap.dedent(MEMO_MODULE))
    monkeypatch.syspath_prepend(str(folder))
    module = importlib.import_module("memo_helpers_mod")
    yield module
    sys.modules.pop("memo_helpers_mod", None)


@pytest.mark.parametrize("name", ["uses_lru", "uses_dict"])
def test_a_file_read_behind_a_memo_is_in_every_later_trace(memo_module, tmp_path, name):
    data = tmp_path / "d.txt"
    data.write_text("first")
    func = getattr(memo_module, name)
    first = _record(lambda: func(path=str(data), x=1), func)
    assert list(first["files"]) == [str(data)]
    second = _record(lambda: func(path=str(data), x=2), func)  # answered by the memo
    assert second == first
    assert _record(lambda: func(path=str(data), x=3)) is None  # without its reach: not known


def test_a_helper_that_reads_each_path_does_not_pile_them_up(memo_module, tmp_path):
    paths = [tmp_path / f"{i}.txt" for i in range(3)]
    for path in paths:
        path.write_text(path.name)
    func = memo_module.per_path
    traces = [_record(lambda p=p: func(path=str(p)), func) for p in paths]
    assert [list(t["files"]) for t in traces] == [[str(p)] for p in paths]


def test_a_nested_result_answered_behind_a_memo_is_in_every_later_trace(memo_module, tmp_path):
    data = tmp_path / "d.txt"
    data.write_text("first")
    memo_module.TRACES["k"] = _record(lambda: open(data).close())
    func = memo_module.uses_answered
    first = _record(lambda: func(key="k", x=1), func)
    assert list(first["files"]) == [str(data)]
    assert _record(lambda: func(key="k", x=2), func) == first


def test_paths_the_call_removes_or_renames_are_its_own_output(tmp_path):
    out, tmp = tmp_path / "out.h5", tmp_path / "out.tmp"
    out.write_text("old")

    def body():
        if os.path.exists(out):  # checked, then replaced: as a C library writing it would
            os.remove(out)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT)
        os.close(fd)
        os.rename(tmp, out)
        os.path.getsize(out)

    assert _record(body) is None


def test_what_the_library_itself_stats_or_opens_is_not_the_call_s(tmp_path):
    def body():
        inputs.exclude_root(tmp_path / "a" / "home")  # resolves the path: os.lstat in realpath

    assert _record(body) is None
