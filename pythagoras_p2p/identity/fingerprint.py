"""Function fingerprints, and the checks that keep them true.

A function's fingerprint hashes its normalized code (:mod:`.code`) and everything the code
reaches, resolved when it is computed.

To that the fingerprint adds everything the code reaches, resolved when it is computed:

* another pure function, or a function or class of the user's own code (``__main__``, a notebook,
  a module of their project): by content, by the same rule, recursively; a cycle (recursion,
  mutual recursion, a registry holding its own users) is a back reference to the position of the
  function on the path, so the walk ends and stays deterministic. Default values and closure
  cells count: they change what a function does as much as its code;
* a module of the user's own code: by name and, by content, those of its attributes that the
  code names (``mylib.helper(x)``, ``from mylib import helper``, also in imports inside the body);
* a module, function or class of an installed package: by name and the package's version;
* a container (list, tuple, dict): item by item, by the same rules, so ``OPS = {"op": sq}``
  follows ``sq``'s code; anything else by its value address (which gives the objects of user
  classes their class's content: see :func:`code_token`).

A fingerprint is only good while what it was made from is unchanged: a notebook cell edits a
constant, a config dict is mutated in place. So it comes as an :class:`Identity` that carries
checks: an identity test for every name it resolved (globals, module and class attributes,
default values, closure cells) and for every item of every list or dict it walked, and a new
value address for each value that can change in place without a new identity (arrays, objects).
A call asks :meth:`Identity.holds` first and fingerprints again when it does not: a rebound or
mutated global is seen at the next call, and a result is never stored under the fingerprint of
values it did not run with.
"""

from __future__ import annotations

import builtins
import datetime
import decimal
import enum
import fractions
import importlib
import importlib.util
import pathlib
import sys
import threading
import types
import uuid
import weakref
from typing import Any

from blake3 import blake3

from ..errors import FingerprintError, SerializationError
from .code import all_names, encode_code, global_names, imports
from .encoding import Address, encode_into, encode_length, register_code_token, value_address
from .usercode import installed_name as _installed_name
from .usercode import is_user_code

__all__ = ["Identity", "identify", "fingerprint", "code_token", "is_user_code"]

_FINGERPRINT_VERSION = b"pythagoras-fn-2\0" + f"py{sys.version_info[0]}.{sys.version_info[1]}".encode()

# Values that cannot change without a new identity: an identity test is all their check needs.
_ATOMS = (type(None), bool, int, float, complex, str, bytes)
# Immutable too, but addressed through their pickle (exact types: a subclass may add state).
_FROZEN = frozenset({
    range, slice, datetime.date, datetime.datetime, datetime.time, datetime.timedelta,
    datetime.timezone, decimal.Decimal, fractions.Fraction, uuid.UUID,
    pathlib.PurePosixPath, pathlib.PosixPath, pathlib.PureWindowsPath,
})
_ABSENT = object()


class Identity:
    """A fingerprint and the checks that say whether what it was made from is still as it was.

    ``same`` holds (mapping, key, value): the name must still be bound to that very object;
    ``attrs`` (object, attribute, value) the same for function attributes and closure cells;
    ``items`` (list or dict, snapshot) that no item was replaced, added or removed; ``values``
    (value, address) that a value which can change in place still has the address it had.
    """

    __slots__ = ("fp", "same", "attrs", "items", "values", "record", "__weakref__")

    def __init__(self, fp: Address, same=(), attrs=(), items=(), values=()):
        self.fp = fp
        self.same = tuple(same)
        self.attrs = tuple(attrs)
        self.items = tuple(items)
        self.values = tuple(values)
        self.record: bytes | None = None  # the function as workers get it (see function.py)

    def holds(self) -> bool:
        """True while every global, attribute, item and value the fingerprint read is unchanged."""
        for scope, key, value in self.same:
            if scope.get(key, _ABSENT) is not value:
                return False
        for obj, attr, value in self.attrs:
            if _attr(obj, attr) is not value:
                return False
        for container, snapshot in self.items:
            if not _same_items(container, snapshot):
                return False
        for value, address in self.values:
            try:
                if value_address(value) != address:
                    return False
            except SerializationError:
                return False
        return True


def _attr(obj: Any, attr: str) -> Any:
    try:
        return getattr(obj, attr)
    except (AttributeError, ValueError):  # an empty closure cell raises ValueError
        return _ABSENT


def _snapshot(container: list | dict) -> tuple:
    return tuple(container.items()) if type(container) is dict else tuple(container)


def _same_items(container: list | dict, snapshot: tuple) -> bool:
    if len(container) != len(snapshot):
        return False
    if type(container) is dict:
        return all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(container.items(), snapshot, strict=True))
    return all(a is b for a, b in zip(container, snapshot, strict=True))


_WALKING = threading.local()  # the code objects being walked on this thread, outermost first


class _Walker:
    """One depth-first walk from a root function or class, gathering bytes and checks."""

    def __init__(self, owner: str):
        self.owner = owner
        self.same: list = []
        self.attrs: list = []
        self.items: list = []
        self.values: list = []
        self.names: frozenset = frozenset()  # attribute names the function being walked uses
        self.modules: set[tuple[int, frozenset]] = set()  # user modules walked, with the names

    def identity(self, out: bytearray) -> Identity:
        return Identity(blake3(out).digest(), self.same, self.attrs, self.items, self.values)

    def _enter(self, obj: Any, out: bytearray) -> bool:
        """Mark ``obj`` as being walked; False (and a back reference written) if it already is."""
        path = _WALKING.__dict__.setdefault("path", [])
        for depth, seen in enumerate(path):
            if seen is obj:
                out += b"<" + str(depth).encode() + b">"
                return False
        path.append(obj)
        return True

    def function(self, func: types.FunctionType, out: bytearray) -> None:
        if not self._enter(func, out):
            return
        names = self.names
        try:
            out += b"F"
            code = func.__code__
            self.attrs.append((func, "__code__", code))
            self.names = frozenset(all_names(code))
            encode_code(code, out)
            self.globals_of(func, out)
            self.imports_of(func, out)
            for attr in ("__defaults__", "__kwdefaults__"):
                default = getattr(func, attr)
                self.attrs.append((func, attr, default))
                out += b"D"
                self.value(attr, default, out)
            if func.__closure__:
                out += b"C"
                for name, cell in zip(code.co_freevars, func.__closure__, strict=True):
                    contents = _attr(cell, "cell_contents")
                    self.attrs.append((cell, "cell_contents", contents))
                    self.value(name, None if contents is _ABSENT else contents, out)
        finally:
            self.names = names
            _WALKING.path.pop()

    def globals_of(self, func: types.FunctionType, out: bytearray) -> None:
        scope = func.__globals__
        builtin_scope = scope.get("__builtins__", builtins)
        if isinstance(builtin_scope, types.ModuleType):
            builtin_scope = builtin_scope.__dict__
        out += b"G"
        for name in sorted(global_names(func.__code__)):
            value = scope.get(name, _ABSENT)
            self.same.append((scope, name, value))  # also: a builtin is not shadowed later
            if value is not _ABSENT:
                self.reference(name, value, out)
            elif name in builtin_scope:
                out += b"b"
                encode_into(name, out)
            # else: a global not defined yet (the call fails then) or one the function defines

    def imports_of(self, func: types.FunctionType, out: bytearray) -> None:
        """Modules the body imports: resolved now, as the call would, and walked like globals."""
        found = sorted(set(imports(func.__code__)))
        if not found:
            return
        out += b"I"
        package = func.__globals__.get("__package__") or func.__globals__.get("__name__")
        for name, level, fromlist in found:
            try:
                absolute = importlib.util.resolve_name("." * level + name, package) if level else name
                module = importlib.import_module(absolute)
                if not fromlist:  # `import a.b` binds the top package; the chain starts there
                    module = sys.modules[absolute.split(".", 1)[0]]
                for item in fromlist:  # `from pkg import sub` may import a submodule
                    if item != "*" and not hasattr(module, item):
                        importlib.import_module(f"{module.__name__}.{item}")
            except Exception:  # the call will fail the same way: its name stands for it
                out += b"?"
                encode_into((name, level), out)
                continue
            self.module(module, out)

    def reference(self, name: str, value: Any, out: bytearray) -> None:
        encode_into(name, out)
        self.value(name, value, out)

    def value(self, name: str, value: Any, out: bytearray) -> None:
        """Encode what ``value`` contributes, and note how to check that it has not changed."""
        kind = type(value)
        if kind in _ATOMS:
            out += b"="
            encode_into(value, out)
            return
        inner = getattr(value, "__pythagoras_function__", None)
        if inner is not None:  # a pure function of a cloud: fingerprinted through its code
            out += b"P"
            self.function(inner, out)
        elif kind is types.FunctionType:
            if is_user_code(value.__module__):
                self.function(value, out)
            else:
                out += b"q"
                encode_into(_installed_name(value.__module__, value.__qualname__), out)
        elif kind is types.ModuleType:
            self.module(value, out)
        elif isinstance(value, type):
            self.klass(value, out)
        elif isinstance(value, enum.Enum):
            # A member by its class and name, not by its value address: that is made of the
            # class's token, whose walk meets the members again (it would not end).
            out += b"e"
            self.klass(kind, out)
            encode_into(value._name_, out)
            self.value(name, value._value_, out)
        elif kind is tuple or kind is list:
            out += b"l" if kind is list else b"u"
            encode_length(len(value), out)
            for item in value:
                self.value(name, item, out)
            if kind is list:
                self.items.append((value, _snapshot(value)))
        elif kind is dict:
            self.mapping(name, value, out)
        elif isinstance(value, (types.BuiltinFunctionType, types.MethodWrapperType)) or (
            callable(value) and hasattr(value, "__qualname__")
            and not is_user_code(getattr(value, "__module__", None))
        ):
            out += b"q"
            encode_into(_installed_name(getattr(value, "__module__", None), value.__qualname__), out)
        else:
            try:
                address = value_address(value)
            except SerializationError as exc:
                raise FingerprintError(
                    f"pure function {self.owner!r} uses {name!r} (a {type(value).__qualname__}), "
                    f"which cannot be fingerprinted ({exc}); import or create it inside the "
                    f"function body, or pass it as an argument"
                ) from None
            out += b"v" + address
            if kind not in _FROZEN and not (
                kind is frozenset and all(type(item) in _ATOMS for item in value)
            ):
                self.values.append((value, address))  # it may change in place: hashed again

    def mapping(self, name: str, value: dict, out: bytearray) -> None:
        """A dict item by item, in an order that does not depend on how it was built."""
        pairs = []
        for key, item in value.items():
            kbuf = bytearray()
            encode_into(key, kbuf)
            vbuf = bytearray()
            self.value(f"{name}[{key!r}]", item, vbuf)
            pairs.append((bytes(kbuf), vbuf))
        pairs.sort(key=lambda kv: kv[0])
        out += b"d"
        encode_length(len(pairs), out)
        for kbuf, vbuf in pairs:
            out += kbuf
            out += vbuf
        self.items.append((value, _snapshot(value)))

    def module(self, module: types.ModuleType, out: bytearray) -> None:
        """An installed module by name and version; one of the user's by what the code uses of it."""
        name = module.__name__
        if not is_user_code(name):
            out += b"m"
            encode_into(_installed_name(name), out)
            return
        out += b"M"
        encode_into(name, out)
        key = (id(module), self.names)
        if key in self.modules:  # walked already for these names (modules import each other)
            out += b"<>"
            return
        self.modules.add(key)
        scope = module.__dict__
        for attr in sorted(self.names.intersection(scope)):
            value = scope[attr]
            self.same.append((scope, attr, value))
            try:
                self.reference(attr, value, out)
            except FingerprintError:
                # The names are those the code uses anywhere (``df.values`` names ``values`` of
                # every module too): an object no address can be made of stands by its type,
                # and is still checked for being rebound.
                out += b"!"
                encode_into(type(value).__qualname__, out)
        out += b"."

    def klass(self, cls: type, out: bytearray) -> None:
        if not is_user_code(cls.__module__):
            out += b"c"
            encode_into(_installed_name(cls.__module__, cls.__qualname__), out)
            return
        if not self._enter(cls, out):
            return
        try:
            out += b"L"
            encode_into(cls.__qualname__, out)
            for base in cls.__bases__:
                self.klass(base, out)
            scope = cls.__dict__
            for attr, value in sorted(scope.items()):
                self.same.append((scope, attr, value))
                if isinstance(value, (staticmethod, classmethod)):
                    value = value.__func__
                if isinstance(value, property):
                    value = value.fget
                if isinstance(value, types.FunctionType):
                    encode_into(attr, out)
                    self.function(value, out)
                elif not attr.startswith("__"):
                    try:
                        self.reference(attr, value, out)
                    except FingerprintError:  # a descriptor or similar: its type stands for it
                        encode_into(type(value).__qualname__, out)
        finally:
            _WALKING.path.pop()


def identify(func: types.FunctionType, name: str | None = None) -> Identity:
    """The fingerprint of ``func`` and of everything it reaches, with the checks that keep it true."""
    walker = _Walker(name or func.__name__)
    out = bytearray(_FINGERPRINT_VERSION)
    walker.function(func, out)
    return walker.identity(out)


def fingerprint(func: types.FunctionType, name: str | None = None) -> Address:
    """The 32-byte fingerprint of ``func`` and of everything it reaches."""
    return identify(func, name).fp


_tokens: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_tokens_lock = threading.Lock()


def code_token(obj: Any) -> bytes | None:
    """The content of a function or class of the user's own code, for the address of a value that
    holds it (an object of a user class, a function passed as an argument); None for code of an
    installed package, which its pickle names well enough. Kept while its checks hold."""
    if not isinstance(obj, (type, types.FunctionType)) or not is_user_code(obj.__module__):
        return None
    cached = _tokens.get(obj)
    if cached is not None and cached.holds():
        return cached.fp
    walker = _Walker(getattr(obj, "__qualname__", "?"))
    out = bytearray(b"pythagoras-code-1\0")
    path = _WALKING.__dict__.setdefault("path", [])
    cut = any(seen is obj for seen in path)
    if isinstance(obj, type):
        walker.klass(obj, out)
    else:
        walker.function(obj, out)
    identity = walker.identity(out)
    if not path and not cut:  # one made inside another walk may hold back references into it
        with _tokens_lock:
            _tokens[obj] = identity
    return identity.fp


register_code_token(code_token)
