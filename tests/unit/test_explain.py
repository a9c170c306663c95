"""``f.explain(**kw)``: why a call is or is not a hit, and ``cache ls --versions``."""

from __future__ import annotations

import json

import pytest
from helpers import run_python

from pythagoras_p2p import LocalCloud
from pythagoras_p2p.explain import HIT, INPUTS_CHANGED, MISS, NEVER


@pytest.fixture
def inline(home):
    c = LocalCloud(home=home, workers=1)
    yield c
    c.close()


def test_a_function_never_called_was_never_computed(inline):
    @inline.add_pure_function
    def square(*, x):
        return x * x

    why = square.explain(x=3)
    assert why.verdict == NEVER and not why.hit
    assert "never computed" in str(why)


def test_a_stored_call_is_a_hit(inline):
    @inline.add_pure_function
    def square(*, x):
        return x * x

    square(x=3)
    why = square.explain(x=3)
    assert why.verdict == HIT and why.hit and why.differences == ()


def test_another_argument_is_named(inline):
    @inline.add_pure_function
    def area(*, width, height):
        return width * height

    area(width=2, height=3)
    area(width=5, height=7)
    why = area.explain(width=2, height=4)
    assert why.verdict == MISS and why.same_version
    assert [d.name for d in why.differences] == ["argument height"]
    assert "argument height" in str(why) and "of this version" in str(why)


def test_a_global_that_changed_is_named_with_the_way_to_declare_it_not_an_input(inline):
    scope = {}
    exec("K = 1\ndef scaled(*, x):\n    return x * K\n", scope)
    scaled = inline.add_pure_function(scope["scaled"])
    scaled(x=2)
    scope["K"] = 2
    why = scaled.explain(x=2)
    assert why.verdict == MISS and not why.same_version
    assert any(d.kind == "global" and "K" in d.name for d in why.differences), str(why)
    assert any("ignore_globals" in h for h in why.hints)


def test_a_helper_that_changed_is_named(inline):
    scope = {}
    exec("def helper(v):\n    return v + 1\ndef f(*, x):\n    return helper(x)\n", scope)
    f = inline.add_pure_function(scope["f"])
    f(x=1)
    exec("def helper(v):\n    return v + 2\n", scope)
    why = f.explain(x=1)
    assert why.verdict == MISS
    assert any("helper" in d.name for d in why.differences), str(why)
    assert not any(d.kind == "argument" for d in why.differences), str(why)


def test_a_file_read_that_changed_is_named(inline, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("1")

    @inline.add_pure_function
    def read(*, path):
        with open(path) as fh:
            return fh.read()

    assert read(path=str(data)) == "1"
    assert read.explain(path=str(data)).verdict == HIT
    data.write_text("22")
    why = read.explain(path=str(data))
    assert why.verdict == INPUTS_CHANGED
    assert any(str(data) in d.name for d in why.differences), str(why)


def test_cache_ls_versions_lists_each_version(home):
    code = f"""
from pythagoras_p2p import LocalCloud
cloud = LocalCloud(home={str(home)!r}, workers=1)
K = {{k}}
@cloud.add_pure_function
def scaled(*, x):
    return x * K
[scaled(x=i) for i in range({{n}})]
"""
    # from outside the checkout: its source folders would shadow the installed package
    run_python(code.replace("{k}", "1").replace("{n}", "3"), cwd=home.parent)
    run_python(code.replace("{k}", "2").replace("{n}", "2"), cwd=home.parent)
    out = run_python("import sys; from pythagoras_p2p.cli.main import main; "
                     "sys.argv = ['pythagoras-node', 'cache', 'ls', '--versions', '--json']; main()",
                     env={"PYTHAGORAS_HOME": str(home)}, cwd=home.parent, check=False)
    assert out.returncode == 0, out.stderr
    rows = [r for r in json.loads(out.stdout) if r["function"] == "__main__.scaled"]
    assert sorted(r["results"] for r in rows) == [2, 3]
    assert [r["results"] for r in rows if r["newest"]] == [2]  # the version stored last
    assert len({r["fingerprint"] for r in rows}) == 2
    assert all(r["first_stored"] <= r["last_stored"] for r in rows)
