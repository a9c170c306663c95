"""A worker runs the caller's code as it is in the caller's memory, not as it is on disk.

Each scenario is a script run in a fresh interpreter (its functions live in ``__main__``, as a
user's do) with one helper module in its folder. The probe behind these: a helper module edited
on disk without a reload, or patched in the caller, gave workers another answer than a plain
call (stored under the same address); ``singledispatch`` and ``lru_cache`` helpers could not be
sent; ``globals()`` and ``eval`` saw only the globals the code names.
"""

from __future__ import annotations

import textwrap

from helpers import run_python

HEAD = """
import sys
sys.path.insert(0, ".")
from pythagoras_p2p import PCloud
cloud = PCloud(requires=None, connection="local", workers=1)
"""


def _run(tmp_path, body: str, helper: str = "def g(v):\n    return v + 1\n") -> list[str]:
    (tmp_path / "helpers.py").write_text(helper)
    script = HEAD + textwrap.dedent(body) + "\ncloud.close()\n"
    done = run_python(script, cwd=tmp_path, env={"PYTHAGORAS_HOME": str(tmp_path / "home")})
    return done.stdout.split("\n")


def test_a_helper_edited_on_disk_but_not_reloaded_runs_as_the_caller_has_it(tmp_path):
    out = _run(tmp_path, """
        import helpers

        @cloud.add_pure_function
        def f(*, x):
            import helpers
            return helpers.g(x)

        print(f(x=1))
        open("helpers.py", "w").write("def g(v):\\n    return v + 100\\n")
        print(f.sync_remote(x=2), f(x=2), f.sync_remote(x=3))
    """)
    assert out[:2] == ["2", "3 3 4"]  # not 102: the worker's copy from the edited file


def test_a_helper_patched_in_the_caller_is_what_workers_run(tmp_path):
    out = _run(tmp_path, """
        import helpers
        helpers.g = lambda v: v + 100

        @cloud.add_pure_function
        def f(*, x):
            import helpers
            return helpers.g(x)

        print(f(x=1), f.sync_remote(x=2), f(x=2))
    """)
    assert out[0] == "101 102 102"


def test_a_helper_module_that_cannot_be_pickled_is_checked_against_its_file(tmp_path):
    helper = "import threading\nLOCK = threading.Lock()\ndef g(v):\n    return v + 1\n"
    out = _run(tmp_path, """
        import helpers

        @cloud.add_pure_function
        def f(*, x):
            import helpers
            return helpers.g(x)

        print(f.sync_remote(x=1))  # worked before: still works (imported by name)
        cloud.close()
        open("helpers.py", "w").write("import threading\\nLOCK = threading.Lock()\\n"
                                      "def g(v):\\n    return v + 100\\n")
        try:
            print(f.sync_remote(x=2))
        except Exception as exc:
            print(type(exc).__name__, "helpers" in str(exc), "reload" in str(exc))
    """, helper)
    assert out[0] == "2"
    assert out[1] == "PythagorasError True True"  # never 102


def test_singledispatch_and_lru_cache_helpers_run_on_workers(tmp_path):
    out = _run(tmp_path, """
        import functools

        @functools.singledispatch
        def kind(v):
            return "other"

        @kind.register(int)
        def _(v):
            return "int"

        @functools.lru_cache(maxsize=8)
        def sq(v):
            return v * v if v < 3 else sq(v - 1) + 1

        @cloud.add_pure_function
        def f(*, x):
            return kind(x), sq(x) if isinstance(x, int) else None

        print(f.sync_remote(x=5), f.sync_remote(x="a"))
    """)
    assert out[0] == "('int', 7) ('other', None)"


def test_globals_and_eval_see_the_callers_whole_module(tmp_path):
    out = _run(tmp_path, """
        import threading

        GV = 2
        LOCK = threading.Lock()

        def hh(v):
            return v * 7

        @cloud.add_pure_function
        def f(*, x):
            return globals().get("GV", 0) * x, globals()["GV"], eval("hh(x)")

        @cloud.add_pure_function
        def uses_lock(*, x):
            return globals()["LOCK"].locked()

        print(f(x=1), f.sync_remote(x=2))
        try:
            print(uses_lock.sync_remote(x=1))
        except Exception as exc:
            print(type(exc).__name__, "'LOCK'" in str(exc))
    """)
    assert out[0] == "(2, 2, 7) (4, 2, 14)"  # not (0, KeyError, NameError)
    assert out[1] == "PythagorasError True"  # never silently missing
