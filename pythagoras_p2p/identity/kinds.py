"""Kinds of values as the walk tells them apart, and how it reads them without running them.

Everything here looks at a value statically: its type, its own ``__dict__`` through
``object.__getattribute__``, its type's dicts (``inspect.getattr_static``). A user object's
``__getattr__`` (an easydict / addict config makes keys on a read) is never called.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import inspect
import io
import pathlib
import queue
import socket
import threading
import types
import uuid
from typing import Any

from .usercode import is_user_code

__all__ = ["ABSENT", "ATOMS", "FROZEN", "OPAQUE", "BOUND", "UNBOUND", "MODULE_DUNDERS", "items",
           "snapshot", "plain_user_class", "pure_function_of", "instance_dict", "label_of",
           "cell_contents", "static_str", "global_label"]

# Values that cannot change without a new identity: an identity test is all their check needs.
ATOMS = (type(None), bool, int, float, complex, str, bytes)
# Immutable too, but addressed through their pickle (exact types: a subclass may add state).
FROZEN = frozenset({
    range, slice, datetime.date, datetime.datetime, datetime.time, datetime.timedelta,
    datetime.timezone, decimal.Decimal, fractions.Fraction, uuid.UUID,
    pathlib.PurePosixPath, pathlib.PosixPath, pathlib.PureWindowsPath,
})
# Objects without a value (no address can be made of them): a handle stands by its type.
OPAQUE = (
    type(threading.Lock()), type(threading.RLock()), threading.Condition, threading.Event,
    threading.Semaphore, threading.Barrier, threading.local, threading.Thread, queue.Queue,
    queue.SimpleQueue, io.IOBase, socket.socket,
)
BOUND = (types.BuiltinFunctionType, types.MethodWrapperType)
UNBOUND = (types.MethodDescriptorType, types.WrapperDescriptorType,
            types.ClassMethodDescriptorType, types.GetSetDescriptorType,
            types.MemberDescriptorType)
# Module globals that are bookkeeping, not behaviour (a coarse walk leaves them out).
MODULE_DUNDERS = frozenset({
    "__name__", "__doc__", "__package__", "__loader__", "__spec__", "__file__", "__cached__",
    "__builtins__", "__path__", "__annotations__",
})
ABSENT = object()



def items(container: Any):
    """The items of a dict, a dict subclass (without calling its own methods) or a mappingproxy."""
    return dict.items(container) if isinstance(container, dict) else container.items()


def snapshot(container: Any) -> tuple:
    """What an items check compares: the items of a dict (or a class's dict) or a list."""
    if isinstance(container, list):
        return tuple(list.__iter__(container))
    return tuple(items(container))


def plain_user_class(kind: type) -> bool:
    """A user class whose objects keep all their state where the walk can read it: their
    ``__dict__`` (and the items of a dict or list they extend). Not one that extends a type with
    hidden state (an array, a frame) or uses ``__slots__``: those go by value address."""
    if not is_user_code(kind.__module__):
        return False
    mro = kind.__mro__
    enum = any(c.__module__ == "enum" for c in mro)
    for c in mro:
        if "__slots__" in c.__dict__ and c.__module__ != "enum":
            return False
        if c in (object, dict, list) or c.__module__ == "enum" or is_user_code(c.__module__):
            continue
        if enum and c in (int, str, float):
            continue
        return False
    return True


def pure_function_of(value: Any) -> types.FunctionType | None:
    """The plain function of a pure function of a cloud (``PureFunction``, told by the attribute
    its ``__init__`` sets, read statically: no import of ``function.py``, no ``__getattr__``)."""
    if not type(value).__module__.startswith("pythagoras_p2p."):
        return None
    scope = instance_dict(value)
    inner = scope.get("__pythagoras_function__") if scope is not None else None
    return inner if isinstance(inner, types.FunctionType) else None


def instance_dict(value: Any) -> dict | None:
    """An object's own ``__dict__``, read without calling any ``__getattr__`` of it."""
    try:
        found = object.__getattribute__(value, "__dict__")
    except (AttributeError, TypeError):
        return None
    return found if type(found) is dict else None


def label_of(key: Any) -> str:
    return repr(key) if type(key) in ATOMS else f"<{type(key).__name__}>"


def cell_contents(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty closure cell
        return ABSENT


def static_str(value: Any, attr: str) -> str | None:
    """A string attribute found without running any of the object's own code."""
    try:
        found = inspect.getattr_static(value, attr)
    except AttributeError:
        return None
    if isinstance(found, (types.GetSetDescriptorType, types.MemberDescriptorType)):
        try:
            found = found.__get__(value, type(value))
        except Exception:
            return None
    return found if isinstance(found, str) else None


def global_label(name: str, value: Any) -> str:
    """How a global reads in ``explain``: what it is, and under which name when it differs."""
    kind = type(value)
    inner = pure_function_of(value)
    if inner is not None:
        what, short = f"helper {inner.__qualname__} (a pure function)", inner.__name__
    elif kind is types.FunctionType and is_user_code(value.__globals__.get("__name__")):
        module = value.__globals__.get("__name__")
        what, short = f"helper {module}.{value.__qualname__}", value.__name__
    elif kind is types.ModuleType:
        module = value.__dict__.get("__name__", name)
        what = f"module {module}" if is_user_code(module) else f"package {module.split('.')[0]}"
        short = module.rsplit(".", 1)[-1]
    elif isinstance(value, type):
        what, short = f"class {value.__module__}.{value.__qualname__}", value.__name__
    else:
        return f"global {name}"
    return what if short == name else f"{what} (as {name})"
