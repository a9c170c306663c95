"""Tracebacks of calls that ran elsewhere show the user's file names and source lines, also
where the file cannot be read (a notebook cell, another machine)."""

from __future__ import annotations

import linecache
import textwrap
import types

import pytest

SOURCE = textwrap.dedent('''
    def helper(v):
        x = v + 1
        raise ValueError(f"bad {x}")

    def f(*, v):
        return helper(v) * 2
''')


def _cell(filename: str) -> types.ModuleType:
    """Functions defined the way a notebook defines them: compiled text whose lines only
    linecache knows (IPython puts each cell there)."""
    linecache.cache[filename] = (len(SOURCE), None, SOURCE.splitlines(keepends=True), filename)
    module = types.ModuleType("cell")
    module.__dict__["__name__"] = "__main__"
    exec(compile(SOURCE, filename, "exec"), module.__dict__)
    return module


@pytest.mark.parametrize("how", ["sync_remote", "sync_parallel"])
def test_a_remote_traceback_names_the_file_and_shows_the_lines(cloud, how):
    filename = f"/nonexistent/notebook-cell-{how}.py"  # no worker can read it
    f = cloud.add_pure_function(_cell(filename).f)
    with pytest.raises(ValueError) as info:
        if how == "sync_remote":
            f.sync_remote(v=1)
        else:
            f.sync_parallel([{"v": 1}])
    text = str(info.value.__cause__)
    assert f'File "{filename}", line 7, in f' in text, text
    assert "return helper(v) * 2" in text
    assert f'File "{filename}", line 4, in helper' in text
    assert 'raise ValueError(f"bad {x}")' in text
    assert "<dynamic-code>" not in text
