"""Where functions that travel by value came from: file names and source lines for tracebacks.

cloudpickle writes every code object it sends with the file name ``<dynamic-code>`` (so a
pickle does not depend on where it was made), and the machine that runs it may not have the
file at all: a traceback then shows neither where the code was nor its text. So a function
record carries, beside the pickle, the file of each of the user's functions it reaches and the
lines of those files; where the function is loaded its code objects get their file names back
and the lines are put into :mod:`linecache` under those names, so tracebacks read as they
would have on the caller's machine.
"""

from __future__ import annotations

import linecache
import types
from typing import Any

__all__ = ["collect", "restore"]

_DYNAMIC = "<dynamic-code>"
_MAX_FILE = 1 << 20  # bytes of one file's text carried, at most
_MAX_TOTAL = 4 << 20  # and of all of them


def _reachable(func: types.FunctionType, is_user: Any):
    """The user's functions ``func`` reaches through globals, closures and containers."""
    seen: set[int] = set()
    todo: list[Any] = [func]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        obj = getattr(obj, "__pythagoras_function__", obj)
        if isinstance(obj, types.FunctionType):
            if not is_user(obj.__module__):
                continue
            yield obj
            names = {n for c in _codes(obj.__code__) for n in c.co_names}
            todo += [v for k, v in obj.__globals__.items() if k in names]
            todo += [c.cell_contents for c in obj.__closure__ or () if _has_contents(c)]
        elif isinstance(obj, (list, tuple, set, frozenset)):
            todo += list(obj)[:1000]
        elif isinstance(obj, dict):
            todo += list(obj.values())[:1000]


def _has_contents(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 (an empty cell raises)
    except ValueError:
        return False
    return True


def _codes(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _key(func: types.FunctionType) -> str:
    return f"{func.__qualname__}:{func.__code__.co_firstlineno}"


def collect(func: types.FunctionType, is_user: Any) -> dict:
    """``{"files": {function key: file name}, "lines": {file name: text}}`` for ``func``."""
    files: dict[str, str] = {}
    lines: dict[str, str] = {}
    total = 0
    for found in _reachable(func, is_user):
        filename = found.__code__.co_filename
        files[_key(found)] = filename
        if filename in lines:
            continue
        text = "".join(linecache.getlines(filename))  # files, notebook cells (IPython adds them)
        if text and len(text) <= _MAX_FILE and total + len(text) <= _MAX_TOTAL:
            lines[filename] = text
            total += len(text)
    return {"files": files, "lines": lines}


def restore(func: types.FunctionType, where: dict | None, is_user: Any) -> None:
    """Give the code objects of ``func`` (just unpickled) their file names back, and put the
    carried lines into :mod:`linecache` where no such file can be read."""
    if not where:
        return
    files, lines = where.get("files", {}), where.get("lines", {})
    for filename, text in lines.items():
        if not linecache.getlines(filename):  # the file is not here: what the caller read is
            linecache.cache[filename] = (len(text), None, text.splitlines(keepends=True), filename)
    for found in _reachable(func, is_user):
        filename = files.get(_key(found))
        if filename and found.__code__.co_filename == _DYNAMIC:
            found.__code__ = _relocate(found.__code__, filename)


def _relocate(code: types.CodeType, filename: str) -> types.CodeType:
    consts = tuple(_relocate(c, filename) if isinstance(c, types.CodeType) else c
                   for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)
