"""Inputs a call depends on without reading them itself this time, end to end: a file read
behind ``lru_cache`` or a memo dict in an earlier call of the same process (inline and in
long-lived workers), a path whose existence it checks, and the working directory a relative path
is read from (identity/inputs.py, identity/memos.py).

Each scenario runs the script in a fresh interpreter, changes something, and runs it again on
the same home; ``runs`` gets a line each time a function really runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

LOADER = r'''
import functools
import os


@functools.lru_cache
def load():
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "d.txt")) as f:
        return f.read()
'''

SCRIPT = r'''
import json, os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pythagoras_p2p import LocalCloud, kw_args
from loader import load

case, how, xs, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "d.txt")
FLAG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flag")
_CACHE = {}
cloud = LocalCloud(home=os.environ["PYTHAGORAS_HOME"], workers=1)


def ran():
    with open(runs, "a") as log:
        log.write("ran\n")


def by_lru(*, x):
    ran()
    return load() + str(x)


def by_dict(*, x):
    ran()
    if "d" not in _CACHE:
        with open(DATA) as f:
            _CACHE["d"] = f.read()
    return _CACHE["d"] + str(x)


def checks(*, x):
    ran()
    return [os.path.exists(FLAG), x]


def relative(*, x):
    ran()
    with open("rel.txt") as f:
        return f.read() + str(x)


f = cloud.add_pure_function(globals()[case], ignore_globals=("_CACHE",))
calls = [int(x) for x in xs.split(",")]
if how == "plain":
    values = [f(x=x) for x in calls]
elif how == "remote":
    values = [f.sync_remote(x=x) for x in calls]
else:
    values = f.sync_parallel([kw_args(x=x) for x in calls])
print(json.dumps(values))
cloud.close()
'''


@pytest.fixture
def script(tmp_path, home):
    (tmp_path / "script.py").write_text(SCRIPT)
    (tmp_path / "loader.py").write_text(LOADER)
    data = tmp_path / "d.txt"
    data.write_text("old")
    runs = tmp_path / "runs"

    def run(case: str, how: str, xs: str, cwd=None) -> tuple[list, int]:
        env = {**os.environ, "PYTHAGORAS_HOME": str(home)}
        proc = subprocess.run([sys.executable, str(tmp_path / "script.py"), case, how, xs,
                               str(runs)], env=env, capture_output=True, text=True, timeout=120,
                              cwd=cwd or tmp_path)
        if proc.returncode:
            raise AssertionError(f"the script failed:\n{proc.stdout}\n{proc.stderr}")
        count = len(runs.read_text().split()) if runs.exists() else 0
        return json.loads(proc.stdout.strip().splitlines()[-1]), count

    run.data = data
    run.folder = tmp_path
    return run


@pytest.mark.parametrize(("case", "how"), [("by_lru", "plain"), ("by_lru", "parallel"),
                                           ("by_dict", "remote")])
def test_a_file_read_behind_a_memo_is_checked_for_the_calls_that_did_not_read_it(script, case,
                                                                                 how):
    values, runs = script(case, how, "1,2")  # x=2 gets the content from the memo
    assert values == ["old1", "old2"] and runs == 2
    script.data.write_text("new")
    values, runs = script(case, how, "2")
    assert values == ["new2"] and runs == 3  # computed again: not the old content
    assert script(case, how, "2") == (["new2"], 3)  # unchanged since: a hit


def test_a_path_whose_existence_a_call_checked_is_checked_again(script):
    assert script("checks", "plain", "1") == ([[False, 1]], 1)
    assert script("checks", "plain", "1") == ([[False, 1]], 1)
    (script.folder / "flag").write_text("")
    assert script("checks", "remote", "1") == ([[True, 1]], 2)


def test_a_relative_path_is_read_again_from_another_working_directory(script):
    for name in ("a", "b"):
        (script.folder / name).mkdir()
        (script.folder / name / "rel.txt").write_text(name)
    assert script("relative", "plain", "1", cwd=script.folder / "a") == (["a1"], 1)
    assert script("relative", "plain", "1", cwd=script.folder / "b") == (["b1"], 2)
    assert script("relative", "plain", "1", cwd=script.folder / "a") == (["a1"], 3)
    assert script("relative", "plain", "1", cwd=script.folder / "a") == (["a1"], 3)
