"""Function fingerprints, and the checks that keep them true.

A function's fingerprint hashes its normalized code (:mod:`.code`) and everything the code
reaches, resolved when it is computed (the walk is :mod:`.walk`, which says what each kind of
value contributes: wrappers, bound methods, dynamic lookups and their coarse fallback):

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
checks: an identity test for every name it resolved (globals, module attributes, default values,
closure cells), for every item of every list, dict, class dict and function ``__dict__`` it
walked, that the names it looked for and did not find stay absent, and a new value address for
each value that can change in place without a new identity (arrays, objects).
A call asks :meth:`Identity.holds` first and fingerprints again when it does not: a rebound or
mutated global is seen at the next call, and a result is never stored under the fingerprint of
values it did not run with.

An identity also carries ``components`` (label -> 16-byte digest of the bytes each top-level part
of the root function wrote: its code, each global, helper, package, closure cell, default and
attribute), computed in the same walk for ``explain`` and stored as :meth:`Identity.manifest`.
"""

from __future__ import annotations

import sys
import threading
import types
import weakref
from typing import Any

from blake3 import blake3

from ..errors import PureFunctionError, SerializationError
from .code import code_closure
from .encoding import Address, register_code_token, value_address
from .usercode import is_user_code
from .walk import ABSENT, WALKING, Dynamic, Walker

__all__ = ["Identity", "identify", "fingerprint", "code_token", "is_user_code",
           "parse_ignore_globals"]

_FINGERPRINT_VERSION = b"pythagoras-fn-3\0" + f"py{sys.version_info[0]}.{sys.version_info[1]}".encode()


class Identity:
    """A fingerprint and the checks that say whether what it was made from is still as it was.

    ``same`` holds (mapping, key, value): the name must still be bound to that very object;
    ``funcs`` (function, code, defaults, keyword defaults, ``__dict__``, was it empty) that no
    function walked got new code, defaults or attributes; ``attrs`` (object, attribute, value) the same for function attributes and closure cells;
    ``items`` (list or dict, snapshot) that no item was replaced, added or removed; ``absent``
    (mapping, names) that none of the names appeared; ``values`` (value, address) that a value
    which can change in place still has the address it had. ``components``: see the module's
    docstring; never read on a hit. ``codes``: the ids of the code objects of every function
    walked and of the code nested in them, for the inputs read behind a memo (:mod:`.memos`); never read on a
    hit either.
    """

    __slots__ = ("fp", "same", "funcs", "attrs", "items", "absent", "values", "components",
                 "codes", "record", "coarse", "__weakref__")

    def __init__(self, fp: Address, same=(), attrs=(), items=(), values=(), absent=(),
                 components: dict[str, bytes] | None = None, funcs=(),
                 codes: frozenset | None = None):
        self.fp = fp
        self.same = tuple(same)
        self.funcs = tuple(funcs)
        self.attrs = tuple(attrs)
        self.items = tuple(items)
        self.absent = tuple(absent)
        self.values = tuple(values)
        self.components = components or {}
        self.codes = codes  # None: not known (an identity trusted as given)
        self.record: Any = None  # the function as workers get it: its record key and bytes
        self.coarse = False  # its walk was coarse (dynamic lookups): records ship whole scopes

    def holds(self) -> bool:
        """True while every global, attribute, item and value the fingerprint read is unchanged."""
        for scope, key, value in self.same:
            if scope.get(key, ABSENT) is not value:
                return False
        for func, code, defaults, kwdefaults, scope, empty in self.funcs:
            if (func.__code__ is not code or func.__defaults__ is not defaults
                    or func.__kwdefaults__ is not kwdefaults or func.__dict__ is not scope
                    or (empty and scope)):
                return False
        for obj, attr, value in self.attrs:
            if _attr(obj, attr) is not value:
                return False
        for container, items in self.items:
            if _len(container) != len(items) or (items and not _same_items(container, items)):
                return False
        for scope, names in self.absent:
            if not scope.keys().isdisjoint(names):
                return False
        for value, address in self.values:
            try:
                if value_address(value) != address:
                    return False
            except SerializationError:
                return False
        return True

    def manifest(self) -> dict[str, str]:
        """``components`` with hex digests: what a function record keeps for ``explain``."""
        return {label: digest.hex() for label, digest in self.components.items()}


def _len(container: Any) -> int:
    if isinstance(container, dict):
        return dict.__len__(container)
    return list.__len__(container) if isinstance(container, list) else len(container)


def _attr(obj: Any, attr: str) -> Any:
    try:
        return getattr(obj, attr)
    except (AttributeError, ValueError):  # an empty closure cell raises ValueError
        return ABSENT


def _same_items(container: Any, items: tuple) -> bool:
    if isinstance(container, list):
        return all(a is b for a, b in zip(list.__iter__(container), items, strict=True))
    pairs = dict.items(container) if isinstance(container, dict) else container.items()
    return all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(pairs, items, strict=True))


def _walk(root: Any, owner: str, head: bytes, ignore: frozenset, components: bool) -> Walker:
    """Walk ``root`` exactly; again, coarsely, when it makes a lookup no walk can follow."""
    for coarse in (False, True):
        walker = Walker(owner, ignore=ignore, coarse=coarse, components=components)
        walker.out = bytearray(head)
        try:
            if isinstance(root, type):
                walker.scopes.klass(root, walker.out)
            else:
                walker.function(root, walker.out)
            return walker
        except Dynamic:
            continue
    raise AssertionError("a coarse walk does not look for dynamic lookups")


def _identity(walker: Walker) -> Identity:
    identity = Identity(blake3(walker.out).digest(), walker.same, walker.attrs, walker.items,
                        walker.values, walker.absent, walker.components, walker.funcs,
                        code_closure(entry[1] for entry in walker.funcs))
    identity.coarse = walker.coarse
    return identity


def identify(func: types.FunctionType, name: str | None = None,
             ignore_globals: tuple[str, ...] = ()) -> Identity:
    """The fingerprint of ``func`` and of everything it reaches, with the checks that keep it
    true. ``ignore_globals``: names of globals that are not inputs (not walked, not checked)."""
    ignore = frozenset(ignore_globals)
    head = _FINGERPRINT_VERSION + (repr(sorted(ignore)).encode() if ignore else b"")
    return _identity(_walk(func, name or func.__name__, head, ignore, components=True))


def parse_ignore_globals(names: Any) -> tuple[str, ...]:
    """``add_pure_function(ignore_globals=...)`` checked: a tuple or list of global names."""
    if isinstance(names, str) or not isinstance(names, (tuple, list)):
        raise PureFunctionError(
            f"ignore_globals={names!r}: give a tuple or list of global names, e.g. "
            f"ignore_globals=(\"_memo\",)"
        )
    bad = [n for n in names if not isinstance(n, str) or not n.isidentifier()]
    if bad:
        raise PureFunctionError(
            f"ignore_globals: {bad!r} are not global names (identifiers such as \"_memo\")"
        )
    return tuple(sorted(set(names)))


def fingerprint(func: types.FunctionType, name: str | None = None) -> Address:
    """The 32-byte fingerprint of ``func`` and of everything it reaches."""
    return identify(func, name).fp


_tokens: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_tokens_lock = threading.Lock()


def code_token(obj: Any) -> bytes | None:
    """The content of a function or class of the user's own code, for the address of a value that
    holds it (an object of a user class, a function passed as an argument); None for code of an
    installed package, which its pickle names well enough. Kept while its checks hold."""
    if isinstance(obj, types.FunctionType):
        module = obj.__globals__.get("__name__")
    elif isinstance(obj, type):
        module = obj.__module__
    else:
        return None
    if not is_user_code(module):
        return None
    cached = _tokens.get(obj)
    if cached is not None and cached.holds():
        return cached.fp
    path = WALKING.__dict__.setdefault("path", [])
    cut = any(seen is obj for seen in path)
    walker = _walk(obj, getattr(obj, "__qualname__", "?"), b"pythagoras-code-2\0", frozenset(),
                   components=False)
    identity = _identity(walker)
    if not path and not cut:  # one made inside another walk may hold back references into it
        with _tokens_lock:
            _tokens[obj] = identity
    return identity.fp


register_code_token(code_token)
