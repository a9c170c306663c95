"""Calls that read the clock or an unseeded global random generator: said once, at a first call.

A verifying trace (:mod:`.inputs`) sees files and variables, but a function that calls
``time.time()``, ``datetime.now()`` or ``random.random()`` returns something no address and no
trace can vouch for: its first result is answered for ever. Such a function is not pure, and
the user is told so once per function, at its first call, naming the construct — a warning,
not a refusal (a timestamp in a log line is harmless; a result that depends on it is not).

The function's own code (and the code nested in it: comprehensions, inner functions) is read
statically: each global it loads and the attributes it takes of it are resolved without
calling anything (no ``__getattr__`` runs), and the object reached is compared with the
clocks and the global generators. Durations (``perf_counter``, ``monotonic``) are not reported,
nor conversions that may read the clock when given no time (``time.localtime()``,
``time.strftime(fmt)``), nor generators the code seeds itself (``random.seed``,
``np.random.seed``), nor helpers' code.
"""

from __future__ import annotations

import builtins
import datetime
import dis
import inspect
import os
import random
import secrets
import sys
import time
import types
import uuid
import warnings
from typing import Any

__all__ = ["ImpureCallWarning", "impure_constructs", "warn_impure"]


class ImpureCallWarning(UserWarning):
    """A pure function reads the clock or an unseeded global random generator."""


_CLOCKS = {time.time: "time.time()", time.time_ns: "time.time_ns()",
           uuid.uuid1: "uuid.uuid1()", uuid.uuid4: "uuid.uuid4()", os.urandom: "os.urandom()",
           secrets.token_bytes: "secrets.token_bytes()", secrets.token_hex: "secrets.token_hex()",
           secrets.token_urlsafe: "secrets.token_urlsafe()", secrets.choice: "secrets.choice()",
           secrets.randbelow: "secrets.randbelow()", secrets.randbits: "secrets.randbits()"}
# Generators made without a seed: random on every run (``default_rng(seed)`` is fine).
_UNSEEDED_WHEN_CALLED_BARE = ("default_rng", "Random", "RandomState", "Generator")
_CLOCK_METHODS = {"now": datetime.datetime, "utcnow": datetime.datetime,
                  "today": datetime.date}  # datetime.datetime is a date too
_SEEDS = ("seed",)
_LOADS = ("LOAD_GLOBAL", "LOAD_NAME")
_LOCAL_LOADS = ("LOAD_FAST", "LOAD_DEREF", "LOAD_CLASSDEREF")
_LOCAL_STORES = ("STORE_FAST", "STORE_DEREF", "STORE_NAME", "STORE_GLOBAL")
_CALLS = ("PRECALL", "CALL", "CALL_FUNCTION", "CALL_METHOD")
_ATTRS = ("LOAD_ATTR", "LOAD_METHOD")
_ABSENT = object()


def _static_attr(obj, name: str):
    try:
        return inspect.getattr_static(obj, name)
    except AttributeError:
        pass
    if isinstance(obj, types.ModuleType):  # a submodule a package loads lazily (numpy.random)
        full = f"{obj.__name__}.{name}"
        if full == "numpy.random" and full not in sys.modules:
            import importlib

            importlib.import_module(full)  # as the call itself would
        return sys.modules.get(full, _ABSENT)
    return _ABSENT


def _global_generators() -> tuple:
    found: list[Any] = [random._inst]  # random.Random, numpy's RandomState
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        found.append(getattr(numpy_random.__dict__.get("mtrand"), "_rand", None))
    return tuple(g for g in found if g is not None)


def _describe(obj, path: list[str], generators: tuple) -> str | None:
    """The construct ``obj`` (reached as ``path``) is, if it reads a clock or a generator."""
    try:
        clock = _CLOCKS.get(obj)
    except TypeError:  # unhashable
        clock = None
    if clock is not None:
        return clock
    owner = getattr(obj, "__self__", None) if isinstance(
        obj, (types.BuiltinMethodType, types.MethodType)) else None
    if owner is not None and any(owner is g for g in generators):
        name = getattr(obj, "__name__", "?")
        return None if name in ("seed", "getstate", "setstate", "get_state", "set_state") \
            else f"{'.'.join(path)}() (the global random generator)"
    return None


def _imported(name: str, fromlist: tuple) -> object:
    """What ``import name`` (or ``from name import ...``) inside a body binds, if loaded."""
    module = sys.modules.get(name, _ABSENT)
    if module is _ABSENT or fromlist:
        return module
    return sys.modules.get(name.split(".", 1)[0], _ABSENT)  # `import a.b` binds `a`


def _resolve_chains(code: types.CodeType, scope: dict, local: dict | None = None):
    """Each (object, dotted path, parent, called bare) the code reaches as
    ``name.attr.attr...`` — a global, or a name an ``import`` in the body bound — resolved
    statically; nested code objects too. ``called bare``: the chain is called with no
    argument right after (``default_rng()``)."""
    local = {} if local is None else dict(local)
    instructions = [i for i in dis.get_instructions(code) if i.opname != "CACHE"]
    chain: list = []
    current: object = _ABSENT
    pending: object = _ABSENT  # what the last IMPORT_NAME / IMPORT_FROM left on the stack
    for n, ins in enumerate(instructions):
        after = instructions[n + 1] if n + 1 < len(instructions) else None
        bare = after is not None and after.opname in _CALLS and not after.arg
        if ins.opname == "IMPORT_NAME":
            fromlist = instructions[n - 1].argval if n else None
            pending = _imported(ins.argval, tuple(fromlist or ()))
            chain, current = [], _ABSENT
            continue
        if ins.opname == "IMPORT_FROM":
            pending = _static_attr(pending, ins.argval) if pending is not _ABSENT else _ABSENT
            continue
        if ins.opname in _LOCAL_STORES and pending is not _ABSENT:
            local[ins.argval] = pending
            if not (after is not None and after.opname == "IMPORT_FROM"):
                pending = _ABSENT
            continue
        if ins.opname in _LOADS or (ins.opname in _LOCAL_LOADS and ins.argval in local):
            chain = [ins.argval]
            if ins.opname in _LOCAL_LOADS:
                obj = local[ins.argval]
            else:
                obj = scope.get(ins.argval, _ABSENT)
                if obj is _ABSENT:
                    obj = getattr(builtins, ins.argval, _ABSENT)
            current = obj
            if current is not _ABSENT:
                yield current, list(chain), None, bare
            continue
        if ins.opname in _ATTRS and chain and current is not _ABSENT:
            parent = current
            current = _static_attr(parent, ins.argval)
            chain.append(ins.argval)
            if current is not _ABSENT:
                yield current, list(chain), parent, bare
            continue
        chain, current = [], _ABSENT
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _resolve_chains(const, scope, local)


def impure_constructs(func: types.FunctionType) -> list[str]:
    """The clocks and unseeded global generators ``func``'s own code calls, named."""
    found: list[str] = []
    seeded: set[str] = set()
    try:
        reached = list(_resolve_chains(func.__code__, func.__globals__))
    except Exception:  # never a reason for a call to fail
        return found
    generators = _global_generators()  # after the walk: it may have imported numpy.random
    for obj, path, parent, bare in reached:
        if path[-1] in _SEEDS:
            seeded.add(".".join(path[:-1]))
        text = None
        clock_class = _CLOCK_METHODS.get(path[-1])
        if clock_class is not None and isinstance(parent, type) and issubclass(parent, clock_class):
            text = f"{'.'.join(path)}()"
        elif bare and path[-1] in _UNSEEDED_WHEN_CALLED_BARE and _of_random(obj):
            text = f"{'.'.join(path)}() (a generator made without a seed)"
        elif parent is not None or len(path) == 1:
            text = _describe(obj, path, generators)
        if text is not None and text not in found:
            found.append(text)
    return [t for t in found if not any(t.startswith(s + ".") and s for s in seeded)]


def _of_random(obj: object) -> bool:
    """Whether ``obj`` is a generator class or factory of ``random`` or ``numpy.random``."""
    module = getattr(obj, "__module__", None) or ""
    return module == "random" or module.startswith("numpy.random")


def warn_impure(func: types.FunctionType, name: str) -> None:
    """Warn (once per function: called at its first call) if it reads a clock or an unseeded
    global random generator."""
    found = impure_constructs(func)
    if found:
        warnings.warn(
            f"{name} calls {', '.join(found)}: its result depends on when it runs, which no "
            f"cache can see, and the first result is answered for ever. Pass the time or a "
            f"seed as an argument (random.Random(seed), np.random.default_rng(seed)), or "
            f"do not make it a pure function", ImpureCallWarning, stacklevel=4)
