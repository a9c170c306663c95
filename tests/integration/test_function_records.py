"""Workers run exactly the caller's code: function records by the hash of their bytes.

A fingerprint can miss an edit (a dynamic lookup the walk does not see). Records used to be
stored under the fingerprint, the first one stored winning, so a later process's ``sync_remote``
ran the old code on new arguments. Here the fingerprint is made to miss every edit on purpose
(each process replaces ``identify`` with a constant), and the new code must run all the same;
a damaged record is never loaded; a worker alive across an ``importlib.reload`` of a helper
module runs the reloaded helper.
"""

from __future__ import annotations

import importlib
import sys

import pytest
from helpers import run_python
from node_harness import copy_key

from pythagoras_p2p import LocalCloud
from pythagoras_p2p.store.core import open_store
from pythagoras_p2p.store.functions import record_key

# A caller whose fingerprint misses every edit of ``f`` (as one missing a dynamic lookup would).
SCRIPT = """
import pythagoras_p2p.function as F
from pythagoras_p2p import PCloud, kw_args
from pythagoras_p2p.identity.fingerprint import Identity

F.identify = lambda func, name, *rest: Identity(b"\\x07" * 32)
cloud = PCloud(connection={connection!r}, **{options})

@cloud.add_pure_function
def f(*, x):
    return x + {add}

print(f.sync_remote(x={x}), f.sync_parallel([kw_args(x={x} + 1), kw_args(x={x} + 2)]))
cloud.close()
"""


def _caller(add: int, x: int, connection: str = "local", **options) -> str:
    return SCRIPT.format(add=add, x=x, connection=connection, options=options)


def test_a_later_process_runs_its_own_code_when_the_fingerprint_missed_the_edit(home):
    first = run_python(_caller(1, 1, workers=1)).stdout.split("\n")[0]
    assert first == "2 [3, 4]"
    second = run_python(_caller(100, 10, workers=1)).stdout.split("\n")[0]
    assert second == "110 [111, 112]"  # not "11 [12, 13]": the first process's code


def test_a_node_runs_each_callers_own_code_when_the_fingerprint_missed_the_edit(
        start_node, tmp_path):
    node = start_node(workers=1)  # one long-lived worker serves both callers
    client = tmp_path / "client"
    copy_key(node.home, client)
    env = {"PYTHAGORAS_HOME": str(client)}
    first = run_python(_caller(1, 1, node.connection), env=env).stdout.split("\n")[0]
    assert first == "2 [3, 4]"
    second = run_python(_caller(100, 10, node.connection), env=env).stdout.split("\n")[0]
    assert second == "110 [111, 112]"


# --------------------------------------------------------------------------- damaged records


def _damage_on_disk(store, record: bytes) -> None:
    """Change one byte of ``record``'s pickle where LMDB keeps it, in the file (as a bad disk
    would; in every copy of those pages the file holds)."""
    from pythagoras_p2p.store.packing import unpack

    pickled = bytes(unpack(record)["pickle"])
    piece = pickled[len(pickled) // 2: len(pickled) // 2 + 32]
    path = store.path / "data.mdb"
    data = path.read_bytes()
    found, at = [], data.find(piece)
    while at >= 0:
        found.append(at)
        at = data.find(piece, at + 1)
    assert found, "the record's bytes are not in the file"
    with open(path, "r+b") as fh:
        for at in found:
            fh.seek(at + 10)
            fh.write(bytes([data[at + 10] ^ 0x01]))


def test_a_damaged_record_is_never_loaded_and_the_next_call_stores_it_again(cloud):
    @cloud.add_pure_function
    def plus_one(*, x):
        return x + 1

    assert plus_one.sync_remote(x=1) == 2
    key, record = plus_one.record(plus_one.identity())
    assert cloud.store.get_function(key) == record
    _damage_on_disk(cloud.store, record)
    cloud.close()  # new workers: they load the record from the store
    with pytest.raises(Exception, match="is damaged"):
        plus_one.sync_remote(x=2)
    assert not cloud.store.has_function(key)  # dropped when found
    assert plus_one.sync_remote(x=3) == 4  # stored again by the caller


def test_the_cli_verify_counts_function_records(home):
    from node_harness import cli

    store = open_store(home)
    store.put_function(record_key(b"x"), b"y")
    done = cli(home, "cache", "verify")
    assert done.returncode == 1
    assert "1 function records" in done.stdout
    assert "function record" in done.stderr


# --------------------------------------------------------------------------- reloaded modules


@pytest.fixture
def helper_module(tmp_path, monkeypatch):
    """A user module ``records_helper`` in a folder on sys.path (the workers' too)."""
    folder = tmp_path / "src"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    path = folder / "records_helper.py"

    def write(value: int):
        path.write_text(f"def value():\n    return {value}\n")
        importlib.invalidate_caches()

    write(1)
    yield write
    sys.modules.pop("records_helper", None)


def test_a_live_worker_runs_the_helper_the_caller_reloaded(home, helper_module):
    cloud = LocalCloud(home=home, workers=1)
    try:
        @cloud.add_pure_function
        def uses_helper(*, x):
            import os

            import records_helper

            return records_helper.value() + x, os.getpid()

        import records_helper

        first, worker = uses_helper.sync_remote(x=1)
        assert first == 2
        helper_module(100)
        importlib.reload(records_helper)
        assert uses_helper(x=0)[0] == 100  # the caller runs the new helper
        second, same_worker = uses_helper.sync_remote(x=2)
        assert same_worker == worker  # the very worker that imported the old one
        assert second == 102
    finally:
        cloud.close()


def test_records_made_with_two_versions_of_a_helper_have_two_keys(home, helper_module):
    from pythagoras_p2p.execution import functions

    cloud = LocalCloud(home=home, workers=1)
    try:
        import records_helper

        @cloud.add_pure_function
        def uses_helper(*, x):
            import records_helper

            return records_helper.value() + x

        old = uses_helper.record(uses_helper.identity())
        assert uses_helper.sync_remote(x=1) == 2
        helper_module(100)
        importlib.reload(records_helper)
        assert uses_helper.sync_remote(x=2) == 102
        new = uses_helper.record(uses_helper.identity())
        assert old.key != new.key
        assert functions.load_record(old.data).modules["records_helper"] != \
            functions.load_record(new.data).modules["records_helper"]
    finally:
        cloud.close()


def test_a_record_names_the_user_modules_it_was_made_with(home, helper_module):
    import records_helper

    from pythagoras_p2p.execution.modules import caller_modules

    before = caller_modules()["records_helper"]
    helper_module(7)
    assert caller_modules()["records_helper"] == before  # not reloaded: the old one runs here
    importlib.reload(records_helper)
    assert caller_modules()["records_helper"] != before
    assert "pythagoras_p2p.function" not in caller_modules()  # installed by name, not tracked
