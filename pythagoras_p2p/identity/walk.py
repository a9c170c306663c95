"""The walk behind a fingerprint: from a function to everything it reaches, as bytes and checks.

What each kind of value contributes (see :mod:`.fingerprint` for why):

* a function of the user's code: its normalized code, the globals and imports it names, its
  defaults, closure cells and attributes (``scale.factor = 3``: its ``__dict__``), recursively;
  a function is the user's by the module it was *defined* in (its globals), not by the
  ``__module__`` that ``functools.wraps`` copies;
* wrappers, followed to what they wrap: ``functools.wraps`` chains and ``lru_cache`` / ``cache``
  (``__wrapped__``), ``partial`` (function, arguments, keywords), ``singledispatch`` (every
  implementation of its registry, checked for new registrations), ``cached_property``,
  ``property``, ``staticmethod`` and ``classmethod`` (the functions they hold);
* a bound method (``predict = model.predict``, ``get = CONFIG.get``, ``fmt = "{}".format``):
  its function and the object it is bound to, by value;
* a class of the user's code: its bases, its metaclass and every attribute of its own, with a
  check on the whole class dict (an attribute added later that shadows an inherited one is seen);
* a module of the user's code: the attributes the code names (and, for those it names that the
  module lacks, that they stay absent: ``getattr(mod, "X", 1)``); the whole module (every
  global, by content or value, and a check on the whole dict) when the module has a PEP 562
  ``__getattr__`` or the walk is *coarse* (below);
* installed code (standard library, packages): by name and version; a dict: item by item in
  insertion order (a function that iterates it sees the order); anything else by value address,
  except synchronisation primitives and other handles that have none (a lock made lazily, an
  open file): they stand by their type, and the name holding them is still checked.

A lookup the walk cannot resolve statically (``globals()``, ``vars()``, ``eval``, ``exec``,
``getattr`` with a computed name on anything but ``self``/``cls``) makes the walk *coarse*: it
starts again and covers every user module it reaches whole. A computed import
(``importlib.import_module(name)``, ``__import__(name)``, ``sys.modules[...]``) could reach
any module at all and is refused with the fix. The walk reads attributes statically (an object's
``__getattr__`` is never called) and ends on cycles: an object already on the path is written as
a back reference to its position.
"""

from __future__ import annotations

import builtins
import enum
import functools
import importlib
import importlib.util
import sys
import threading
import types
from collections.abc import Mapping
from typing import Any

from blake3 import blake3

from ..errors import FingerprintError, SerializationError
from .code import all_names, encode_code, global_names, imports
from .encoding import encode_into, encode_length, value_address
from .kinds import (
    ABSENT,
    ATOMS,
    BOUND,
    FROZEN,
    OPAQUE,
    UNBOUND,
    cell_contents,
    global_label,
    instance_dict,
    items,
    label_of,
    plain_user_class,
    pure_function_of,
    snapshot,
    static_str,
)
from .lookups import Dynamic, scan
from .scopes import Scopes
from .usercode import installed_name, is_user_code

__all__ = ["Walker", "Dynamic", "ABSENT", "WALKING"]

WALKING = threading.local()  # the objects being walked on this thread, outermost first


class Walker:
    """One depth-first walk from a root function or class, gathering bytes and checks."""

    def __init__(self, owner: str, *, ignore: frozenset = frozenset(), coarse: bool = False,
                 components: bool = False):
        self.owner = owner
        self.ignore = ignore  # globals the user declared not to be inputs (ignore_globals)
        self.coarse = coarse
        self.same: list = []  # (mapping, key, value): the key still holds that very object
        self.attrs: list = []  # (object, attribute, value): likewise for attributes
        # (function, code, defaults, kwdefaults, __dict__, whether it was empty) of every user
        # function walked: none of them replaced, no attribute set on a function that had none
        self.funcs: list = []
        self.items: list = []  # (container, snapshot): no item replaced, added or removed
        self.absent: list = []  # (mapping, names): none of them appeared
        self.values: list = []  # (value, address): a value that can change in place
        self.components: dict[str, bytes] | None = {} if components else None
        self.depth = 0
        self.names: frozenset = frozenset()  # attribute names the function being walked uses
        self.modules: set = set()  # user modules walked, with the names
        self.out = bytearray()  # what the walk wrote (set by its entry point)
        self.scopes = Scopes(self)  # modules and classes

    # ------------------------------------------------------------------ bookkeeping

    def enter(self, obj: Any, out: bytearray) -> bool:
        """Mark ``obj`` as being walked; False (and a back reference written) if it already is."""
        path = WALKING.__dict__.setdefault("path", [])
        for depth, seen in enumerate(path):
            if seen is obj:
                out += b"<" + str(depth).encode() + b">"
                return False
        path.append(obj)
        return True

    def leave(self) -> None:
        """``obj`` of the last :meth:`enter` that returned True is walked."""
        WALKING.path.pop()

    def _part(self, label: str, out: bytearray, start: int) -> None:
        """Record what the root function's part ``label`` wrote since ``start`` (for explain)."""
        if self.components is None or self.depth != 1:
            return
        if label in self.components:
            n = 2
            while f"{label} #{n}" in self.components:
                n += 1
            label = f"{label} #{n}"
        self.components[label] = blake3(bytes(out[start:])).digest(length=16)

    def checkitems(self, container: Any) -> None:
        self.items.append((container, snapshot(container)))

    # ------------------------------------------------------------------ functions

    def function(self, func: types.FunctionType, out: bytearray) -> None:
        if not self.enter(func, out):
            return
        names = self.names
        self.depth += 1
        try:
            out += b"F"
            code = func.__code__
            scope = func.__dict__  # attributes set on the function count
            self.funcs.append((func, code, func.__defaults__, func.__kwdefaults__, scope, not scope))
            self.names = frozenset(all_names(code))
            start = len(out)
            encode_code(code, out)
            self._part(f"code of {func.__qualname__}", out, start)
            extra_imports = scan(func, self.owner, self.coarse)
            self.globals_of(func, out)
            self.imports_of(func, out, extra_imports)
            for attr in ("__defaults__", "__kwdefaults__"):
                default = getattr(func, attr)
                start = len(out)
                out += b"D"
                self.value(attr, default, out)
                if default is not None:
                    self._part("default values" if attr == "__defaults__" else "default keyword values",
                               out, start)
            if func.__closure__:
                out += b"C"
                for name, cell in zip(code.co_freevars, func.__closure__, strict=True):
                    contents = cell_contents(cell)
                    self.attrs.append((cell, "cell_contents", contents))
                    start = len(out)
                    self.value(name, None if contents is ABSENT else contents, out)
                    self._part(f"closure {name}", out, start)
            if scope:
                self.checkitems(scope)
                out += b"A"
                for key, value in scope.items():
                    start = len(out)
                    encode_into(key, out)
                    self.value(f"{func.__qualname__}.{key}", value, out)
                    self._part(f"attribute {func.__qualname__}.{key}", out, start)
        finally:
            self.names = names
            self.depth -= 1
            WALKING.path.pop()

    def globals_of(self, func: types.FunctionType, out: bytearray) -> None:
        scope = func.__globals__
        builtin_scope = scope.get("__builtins__", builtins)
        if isinstance(builtin_scope, types.ModuleType):
            builtin_scope = builtin_scope.__dict__
        out += b"G"
        if self.coarse and is_user_code(scope.get("__name__")):
            self.scopes.whole_scope(scope, out)
        for name in sorted(global_names(func.__code__)):
            start = len(out)
            if name in self.ignore:  # the user's promise: not an input
                out += b"i"
                encode_into(name, out)
                continue
            value = scope.get(name, ABSENT)
            self.same.append((scope, name, value))  # also: a builtin is not shadowed later
            if value is not ABSENT:
                self.reference(name, value, out)
                self._part(global_label(name, value), out, start)
            elif name in builtin_scope:
                out += b"b"
                encode_into(name, out)
            # else: a global not defined yet (the call fails then) or one the function defines

    def imports_of(self, func: types.FunctionType, out: bytearray, extra: list) -> None:
        """Modules the body imports: resolved now, as the call would, and walked like globals."""
        found = sorted(set(imports(func.__code__)) | set(extra))
        if not found:
            return
        out += b"I"
        package = func.__globals__.get("__package__") or func.__globals__.get("__name__")
        for name, level, fromlist in found:
            start = len(out)
            try:
                absolute = importlib.util.resolve_name("." * level + name, package) if level else name
                module = importlib.import_module(absolute)
                if not fromlist:  # `import a.b` binds the top package; the chain starts there
                    module = sys.modules[absolute.split(".", 1)[0]]
                for item in fromlist:  # `from pkg import sub` may import a submodule
                    if item != "*" and item not in module.__dict__:
                        importlib.import_module(f"{module.__name__}.{item}")
            except Exception:  # the call will fail the same way: its name stands for it
                out += b"?"
                encode_into((name, level), out)
                continue
            self.scopes.module(module, out)
            self._part(global_label(module.__name__, module), out, start)

    def reference(self, name: str, value: Any, out: bytearray) -> None:
        encode_into(name, out)
        self.value(name, value, out)

    # ------------------------------------------------------------------ values

    def value(self, name: str, value: Any, out: bytearray) -> None:
        """Encode what ``value`` contributes, and note how to check that it has not changed."""
        kind = type(value)
        if kind in ATOMS:
            out += b"="
            encode_into(value, out)
        elif (pure := pure_function_of(value)) is not None:  # through its code
            out += b"P"
            self.function(pure, out)
        elif kind is types.FunctionType:
            self.any_function(name, value, out)
        elif kind is types.ModuleType:
            self.scopes.module(value, out)
        elif isinstance(value, type):
            self.scopes.klass(value, out)
        elif kind is tuple or kind is list:
            out += b"l" if kind is list else b"u"
            encode_length(len(value), out)
            for item in value:
                self.value(name, item, out)
            if kind is list:
                self.checkitems(value)
        elif kind is dict or kind is types.MappingProxyType:
            self.mapping(name, value, out)
        elif isinstance(value, enum.Enum):  # a member by its class, name and value
            out += b"e"
            self.scopes.klass(kind, out)
            state = instance_dict(value) or {}
            encode_into(state.get("_name_"), out)
            self.value(name, state.get("_value_"), out)
        elif kind is types.MethodType:  # `predict = model.predict`: the object counts too
            out += b"B"
            self.value(name, value.__func__, out)
            self.value(f"{name}.__self__", value.__self__, out)
        elif isinstance(value, BOUND):
            owner = value.__self__
            out += b"q"
            encode_into(f"{type(owner).__qualname__}.{value.__name__}", out)
            if owner is not None and not isinstance(owner, types.ModuleType):
                out += b"B"  # `get = CONFIG.get`, `fmt = "{}".format`: bound to a value
                self.value(f"{name}.__self__", owner, out)
            else:
                encode_into(installed_name(value.__module__ or getattr(owner, "__name__", None),
                                           value.__qualname__), out)
        elif isinstance(value, UNBOUND):
            out += b"q"
            self.value(name, value.__objclass__, out)
            encode_into(value.__name__, out)
        elif kind is functools.partial:
            out += b"p"
            self.value(name, value.func, out)
            self.value(name, value.args, out)
            self.value(name, value.keywords, out)
            self.value(name, instance_dict(value) or {}, out)
        elif kind is staticmethod or kind is classmethod:
            out += b"s" if kind is staticmethod else b"c"
            self.value(name, value.__func__, out)
        elif kind is property:
            out += b"y"
            for part in (value.fget, value.fset, value.fdel):
                self.value(name, part, out)
        elif kind is functools.cached_property:
            out += b"Y"
            self.value(name, value.func, out)
        else:
            self.other(name, value, out)

    def any_function(self, name: str, func: types.FunctionType, out: bytearray) -> None:
        """A function of the user's code by content; one of installed code by name, following
        what it wraps (a decorator's wrapper) and its registry (``singledispatch``)."""
        defined_in = func.__globals__.get("__name__")
        if is_user_code(defined_in):
            self.function(func, out)
            return
        out += b"q"
        encode_into(installed_name(defined_in, func.__code__.co_qualname
                                   if hasattr(func.__code__, "co_qualname") else func.__name__), out)
        scope = func.__dict__
        wrapped = scope.get("__wrapped__", ABSENT)
        if wrapped is ABSENT:
            return
        self.attrs.append((func, "__dict__", scope))
        self.checkitems(scope)
        out += b"w"
        self.value(name, wrapped, out)
        registry = scope.get("registry")
        if isinstance(registry, types.MappingProxyType):  # functools.singledispatch
            out += b"R"
            self.mapping(name, registry, out)
        if func.__closure__:  # a decorator's parameters: `@retry(times=3)`
            for cell in func.__closure__:
                contents = cell_contents(cell)
                self.attrs.append((cell, "cell_contents", contents))
                if contents is wrapped or contents is ABSENT:
                    continue
                try:
                    self.value(name, contents, out)
                except FingerprintError:
                    out += b"!"
                    encode_into(type(contents).__qualname__, out)

    def other(self, name: str, value: Any, out: bytearray) -> None:
        kind = type(value)
        scope = instance_dict(value)
        if plain_user_class(kind):
            self.instance(name, value, scope, out)
            return
        if scope is not None and "__wrapped__" in scope and not is_user_code(kind.__module__):
            out += b"w"  # functools.lru_cache / cache, and other installed wrappers
            encode_into(installed_name(kind.__module__, kind.__qualname__), out)
            self.value(name, scope["__wrapped__"], out)
            return
        if callable(value) and not is_user_code(kind.__module__) and scope is None:
            qualname = static_str(value, "__qualname__") or static_str(value, "__name__")
            if qualname:  # an installed callable (a ufunc, a compiled function): by name
                out += b"q"
                encode_into(installed_name(static_str(value, "__module__") or kind.__module__,
                                           qualname), out)
                return
        try:
            address = value_address(value)
        except SerializationError as exc:
            if isinstance(value, OPAQUE):  # a handle has no value: its type stands for it
                out += b"o"
                encode_into(f"{kind.__module__}.{kind.__qualname__}", out)
                return
            raise FingerprintError(
                f"pure function {self.owner!r} uses {name!r} (a {kind.__qualname__}), "
                f"which cannot be fingerprinted ({exc}); import or create it inside the "
                f"function body, or pass it as an argument"
            ) from None
        out += b"v" + address
        if kind not in FROZEN and not (kind is frozenset and all(type(i) in ATOMS for i in value)):
            self.values.append((value, address))  # it may change in place: hashed again

    def instance(self, name: str, value: Any, scope: dict | None, out: bytearray) -> None:
        """An object of a user class whose state is all in its ``__dict__`` (and its items, for a
        dict or list subclass): its class by content and its state item by item, walked like a
        global's, so an object that holds itself (or its class that holds it) ends in a back
        reference rather than an address that depends on where the walk started."""
        if not self.enter(value, out):
            return
        try:
            out += b"O"
            self.scopes.klass(type(value), out)
            if isinstance(value, dict):
                self.mapping(name, value, out)
            elif isinstance(value, list):
                out += b"l"
                encode_length(len(value), out)
                for item in list.__iter__(value):
                    self.value(name, item, out)
                self.checkitems(value)
            self.mapping(name, scope if scope is not None else {}, out)
        finally:
            WALKING.path.pop()

    def mapping(self, name: str, value: Mapping, out: bytearray) -> None:
        """A dict item by item, in insertion order: a function that iterates it sees the order."""
        out += b"d"
        encode_length(len(value), out)
        for key, item in items(value):
            encode_into(key, out)
            self.value(f"{name}[{label_of(key)}]", item, out)
        self.checkitems(value)
