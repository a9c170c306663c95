"""Lookups the walk cannot follow by name.

The walk follows names. Code can also reach things by a name it computes: ``globals()[n]``,
``vars(mod)[n]``, ``getattr(mod, n)``, ``eval``/``exec``. :func:`scan` finds them in the
instructions (a name loaded, the attributes read of it, the simple arguments a call is given)
and raises :class:`Dynamic`: the walk then starts again *coarse*, covering every user module
it reaches whole. ``getattr(self, n)`` and ``vars(self)`` stay exact (the object is an argument,
its class is walked whole), and so does ``getattr(mod, "K")`` (a constant name is a name). A
computed import (``importlib.import_module(n)``, ``__import__(n)``, ``sys.modules[...]``) may
reach any module at all: it is refused with the fix; with a constant name it is walked like an
``import`` statement.
"""

from __future__ import annotations

import builtins
import importlib
import sys
import types
from typing import Any

from ..errors import FingerprintError
from .code import chains, local_imports
from .kinds import ABSENT

__all__ = ["scan", "Dynamic"]

_SELF_NAMES = ("self", "cls", "mcs", "metacls")
_DYNAMIC = {"globals": "globals()", "vars": "vars()", "eval": "eval()", "exec": "exec()"}


class Dynamic(BaseException):  # noqa: N818 - a signal to walk again, not an error
    """A lookup the walk cannot follow exactly was found: walk again, coarsely. (Not an
    Exception, so a pickle between here and the walk's entry lets it through.)"""


def scan(func: types.FunctionType, owner: str, coarse: bool) -> list[tuple[str, int, tuple]]:
    """How the code reaches names: raises :class:`Dynamic` for a lookup no walk follows
    exactly (unless the walk is coarse already) and refuses a computed import; returns the
    imports with a constant name, to be walked like ``import`` statements."""
    scope = func.__globals__
    code = func.__code__
    first = code.co_varnames[0] if code.co_argcount + code.co_kwonlyargcount else None
    aliases = local_imports(code)
    found: list = []
    for kind, path, args in chains(code):
        root = path[0]
        target = _resolve(kind, root, scope, aliases)
        if kind == "global" and root in _DYNAMIC and target is getattr(builtins, root):
            if root == "vars" and args[:1] and args[0][1] in _SELF_NAMES + (first,):
                continue
            if not coarse:
                raise Dynamic(_DYNAMIC[root])
        if kind == "global" and root in ("getattr", "hasattr") and target is getattr(builtins, root):
            if len(args) >= 2 and args[1][0] == "const" and type(args[1][1]) is str:
                continue
            if args[:1] and args[0][0] == "fast" and args[0][1] in _SELF_NAMES:
                continue
            if not coarse:
                raise Dynamic(f"{root}() with a computed name")
        is_import_module = (
            (target is importlib and path[1:2] == ("import_module",))
            or (target is importlib.import_module and len(path) == 1)
            or (root == "__import__" and kind == "global" and target is builtins.__import__)
        )
        if is_import_module:
            if args[:1] and args[0][0] == "const" and type(args[0][1]) is str:
                found.append((args[0][1], 0, ()))
                continue
            _refuse(owner, f"{'.'.join(path)}() with a computed module name")
        if target is sys and path[1:2] == ("modules",):
            _refuse(owner, "sys.modules[...]")
    return found


def _resolve(kind: str, name: str, scope: dict, aliases: dict) -> Any:
    if kind == "global":
        found = scope.get(name, ABSENT)
        if found is ABSENT:
            found = getattr(builtins, name, ABSENT)
        return found
    if kind == "fast" and name in aliases:
        dotted = aliases[name]
        module = sys.modules.get(dotted)
        if module is None and "." not in dotted:
            try:  # the call imports it anyway
                module = importlib.import_module(dotted)
            except Exception:
                return ABSENT
        if module is None and "." in dotted:
            head, _, attr = dotted.rpartition(".")
            module = getattr(sys.modules.get(head), "__dict__", {}).get(attr)
        return ABSENT if module is None else module
    return ABSENT


def _refuse(owner: str, construct: str) -> None:
    raise FingerprintError(
        f"pure function {owner!r} reaches code through {construct}, which no fingerprint "
        f"can follow (it may import any module at call time); import the modules it uses "
        f"with `import` statements (or importlib.import_module with a constant name)"
    )
