"""Verifying traces end to end: a result is answered again only while the files and environment
variables its call read are unchanged, in a fresh process on the same home (identity/inputs.py).

Each scenario runs a script twice or more in fresh interpreters, changing a file or a variable
between the runs; the script appends a line to ``runs`` (a file opened for appending: a write,
never an input) each time the function really runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r'''
import json, os, sys
from pythagoras_p2p import LocalCloud, kw_args

how, path, runs = sys.argv[1], sys.argv[2], sys.argv[3]
track = sys.argv[4] == "track" if len(sys.argv) > 4 else True
cloud = LocalCloud(home=os.environ["PYTHAGORAS_HOME"], workers=1)


def reads(*, path, runs):
    with open(runs, "a") as log:
        log.write("ran\n")
    with open(path) as f:
        text = f.read()
    return [text, os.environ.get("TRACED_MODE")]


def outer(*, path, runs):
    return ["outer", *inner(path=path, runs=runs)]


f = cloud.add_pure_function(reads, track_inputs=track)
inner = f
g = cloud.add_pure_function(outer)
if how == "plain":
    value = f(path=path, runs=runs)
elif how == "remote":
    value = f.sync_remote(path=path, runs=runs)
elif how == "parallel":
    value = f.sync_parallel([kw_args(path=path, runs=runs)])[0]
elif how == "outer":
    value = g(path=path, runs=runs)
info = (g if how == "outer" else f).lookup(path=path, runs=runs)
print(json.dumps({"value": value, "inputs": info.inputs, "tracked": info.inputs_tracked}))
cloud.close()
'''


@pytest.fixture
def script(tmp_path, home):
    path = tmp_path / "script.py"
    path.write_text(SCRIPT)
    data = tmp_path / "data.txt"
    data.write_text("first")
    runs = tmp_path / "runs"

    def run(how: str, *, env: dict | None = None, track: bool = True) -> tuple[dict, int]:
        full = {k: v for k, v in os.environ.items() if k != "TRACED_MODE"}
        full.update({"PYTHAGORAS_HOME": str(home), **(env or {})})
        proc = subprocess.run([sys.executable, str(path), how, str(data), str(runs),
                               "track" if track else "off"], env=full, capture_output=True,
                              text=True, timeout=120)
        if proc.returncode:
            raise AssertionError(f"the script failed:\n{proc.stdout}\n{proc.stderr}")
        count = len(runs.read_text().split()) if runs.exists() else 0
        return json.loads(proc.stdout.strip().splitlines()[-1]), count

    run.data = data
    return run


@pytest.mark.parametrize("how", ["plain", "remote", "parallel"])
def test_a_changed_file_is_computed_again_and_the_same_content_is_a_hit(script, how):
    out, runs = script(how)
    assert out["value"] == ["first", None] and runs == 1
    data = str(script.data)
    assert out["inputs"]["files"][data][0] and out["inputs"]["env"] == {"TRACED_MODE": None}
    assert script(how)[1] == 1  # unchanged: a hit
    script.data.write_text("second")
    out, runs = script(how)
    assert out["value"] == ["second", None] and runs == 2  # computed again, and replaced
    assert script(how)[1] == 2
    script.data.write_text("second")  # the same bytes written again: a new mtime, still a hit
    st = os.stat(data)
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    out, runs = script(how)
    assert out["value"] == ["second", None] and runs == 2


@pytest.mark.parametrize("how", ["plain", "remote", "parallel"])
def test_a_changed_or_unset_variable_is_computed_again(script, how):
    out, runs = script(how, env={"TRACED_MODE": "a"})
    assert out["value"] == ["first", "a"] and out["inputs"]["env"] == {"TRACED_MODE": "a"}
    assert runs == 1 and script(how, env={"TRACED_MODE": "a"})[1] == 1
    out, runs = script(how, env={"TRACED_MODE": "b"})
    assert out["value"] == ["first", "b"] and runs == 2
    out, runs = script(how)  # unset
    assert out["value"] == ["first", None] and runs == 3
    assert script(how)[1] == 3


def test_a_removed_file_is_computed_again(script):
    assert script("plain")[1] == 1
    script.data.unlink()
    with pytest.raises(AssertionError, match="FileNotFoundError"):
        script("plain")  # computed again: it now fails, and nothing is stored


def test_a_caller_depends_on_what_a_nested_pure_function_read(script):
    assert script("plain")[1] == 1  # the inner call is stored first
    out, runs = script("outer")  # the outer call gets it as a hit, and its inputs with it
    assert out["value"] == ["outer", "first", None] and runs == 1
    assert str(script.data) in out["inputs"]["files"]
    script.data.write_text("second")
    out, runs = script("outer")
    assert out["value"] == ["outer", "second", None] and runs == 2


def test_untracked_functions_keep_their_old_result(script):
    out, runs = script("plain", track=False)
    assert out == {"value": ["first", None], "inputs": None, "tracked": False} and runs == 1
    script.data.write_text("second")
    out, runs = script("plain", track=False)
    assert out["value"] == ["first", None] and runs == 1  # the user's promise: no check
    out, runs = script("remote", track=False)
    assert out["value"] == ["first", None] and runs == 1
    out, runs = script("plain")  # tracked again: never the untracked result
    assert out["value"] == ["second", None] and runs == 2


def test_lookup_says_which_inputs_changed(cloud, tmp_path):
    data = tmp_path / "in.txt"
    data.write_text("x")

    def reads(*, path):
        with open(path) as f:
            return f.read()

    f = cloud.add_pure_function(reads)
    assert f(path=str(data)) == "x"
    info = f.lookup(path=str(data))
    assert list(info.inputs["files"]) == [str(data)] and info.inputs_changed == ()
    data.write_text("yy")
    assert f.lookup(path=str(data)).inputs_changed == (f"file {data} changed",)
    assert f(path=str(data)) == "yy"
    assert f.lookup(path=str(data)).inputs_changed == ()


def test_reads_of_the_interpreter_and_written_files_are_not_recorded(cloud, tmp_path):
    import sysconfig

    stdlib_file = os.path.join(sysconfig.get_paths()["stdlib"], "os.py")
    prefix_file = next((p for p in (os.path.join(sys.prefix, "pyvenv.cfg"),
                                    os.path.join(sys.base_prefix, "lib")) if os.path.isfile(p)),
                       stdlib_file)

    def reads_others(*, where):
        with open(stdlib_file) as f, open(prefix_file, "rb") as g:
            f.read(10), g.read(10)
        scratch = os.path.join(where, "scratch")
        with open(scratch, "w") as out:  # written first, then read back: its own output
            out.write("mine")
        with open(scratch) as back:
            return back.read()

    f = cloud.add_pure_function(reads_others)
    assert f(where=str(tmp_path)) == "mine"
    assert f.lookup(where=str(tmp_path)).inputs is None
    assert f.sync_remote(where=str(tmp_path) + "/") == "mine"
    assert f.lookup(where=str(tmp_path) + "/").inputs is None


def read_text(*, path):
    with open(path) as f:
        return [f.read(), os.getpid()]


def test_a_node_s_stored_result_is_answered_only_while_its_inputs_hold(node, make_client, tmp_path):
    """The node's answer carries the trace and the caller checks it; a call sent to the node
    is answered from its store only while the trace holds there."""
    data = tmp_path / "shared.txt"
    data.write_text("one")
    a = make_client(node, "a")
    f = a.add_pure_function(read_text)
    first = f.sync_remote(path=str(data))
    assert first[0] == "one" and first[1] != os.getpid()
    b = make_client(node, "b")
    assert b.ready_peers(timeout=10), "the node never became ready for client b"
    assert b.add_pure_function(read_text)(path=str(data)) == first  # found on the node
    data.write_text("two")
    c = make_client(node, "c")
    assert c.ready_peers(timeout=10), "the node never became ready for client c"
    assert c.add_pure_function(read_text)(path=str(data)) == ["two", os.getpid()]  # not the node's
    second = f.sync_remote(path=str(data))  # a's copy and the node's are both out of date
    assert second[0] == "two" and second[1] not in (os.getpid(),)


def sizes_in(*, folder):
    return sorted((name, os.path.getsize(os.path.join(folder, name)))
                  for name in os.listdir(folder))


def test_a_file_added_to_a_listed_folder_is_computed_again(home, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a").write_text("1")
    code = (
        f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "from pythagoras_p2p import LocalCloud, kw_args\n"
        "from test_run_time_inputs import sizes_in\n"
        f"with LocalCloud(home={str(home)!r}, workers=1) as cloud:\n"
        "    f = cloud.add_pure_function(sizes_in)\n"
        f"    print(f.sync_parallel([kw_args(folder={str(folder)!r})])[0])\n"
    )

    def run():
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120, check=True).stdout.strip()

    assert run() == "[('a', 1)]"
    (folder / "b").write_text("22")
    assert run() == "[('a', 1), ('b', 2)]"


def test_a_caller_depends_on_what_the_calls_it_runs_in_workers_read(cloud, tmp_path):
    from pythagoras_p2p import kw_args

    data = tmp_path / "data.txt"
    data.write_text("one")
    inner = cloud.add_pure_function(read_text)

    def outer(*, path):
        return inner.sync_parallel([kw_args(path=path)])[0][0]

    g = cloud.add_pure_function(outer)
    assert g(path=str(data)) == "one"
    assert str(data) in g.lookup(path=str(data)).inputs["files"]
    data.write_text("two")
    assert g(path=str(data)) == "two"
