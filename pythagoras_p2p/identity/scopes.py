"""The walk of modules and classes, for :class:`.walk.Walker`: an installed one by name and
version; one of the user's by what the code uses of it (a module), or whole (a module with a
``__getattr__``, or any module of a coarse walk), or by its bases, metaclass and own attributes
(a class), with the checks that keep the fingerprint true (see :mod:`.walk`)."""

from __future__ import annotations

import types
from typing import Any

from ..errors import FingerprintError
from .encoding import encode_into
from .kinds import MODULE_DUNDERS
from .usercode import installed_name, is_user_code

__all__ = ["Scopes"]


class Scopes:
    """Modules and classes, walked into the bytes of the walker that holds this part."""

    def __init__(self, walker: Any):
        self.walker = walker  # a walk.Walker: its state, checks and value walk

    def module(self, module: types.ModuleType, out: bytearray) -> None:
        """An installed module by name and version; one of the user's by what the code uses of
        it (all of it when it has a ``__getattr__`` or the walk is coarse)."""
        w = self.walker
        scope = module.__dict__
        name = scope.get("__name__", "?")
        if not is_user_code(name):
            out += b"m"
            encode_into(installed_name(name), out)
            return
        out += b"M"
        encode_into(name, out)
        if w.coarse or "__getattr__" in scope:
            self.whole_scope(scope, out)
            return
        key = (id(module), w.names)
        if key in w.modules:  # walked already for these names (modules import each other)
            out += b"<>"
            return
        w.modules.add(key)
        used = w.names.intersection(scope)
        missing = w.names.difference(scope).difference(w.ignore)
        if missing:  # `getattr(mod, "X", 1)`: X must stay absent
            w.absent.append((scope, frozenset(missing)))
        for attr in sorted(used):
            if attr in w.ignore:
                continue
            value = scope[attr]
            w.same.append((scope, attr, value))
            try:
                w.reference(attr, value, out)
            except FingerprintError:
                # The names are those the code uses anywhere (``df.values`` names ``values`` of
                # every module too): an object no address can be made of stands by its type,
                # and is still checked for being rebound.
                out += b"!"
                encode_into(type(value).__qualname__, out)
        out += b"."

    def whole_scope(self, scope: dict, out: bytearray) -> None:
        """Every global of a user module, and a check that none is rebound, added or removed."""
        w = self.walker
        key = (id(scope), None)
        if key in w.modules:
            out += b"<>"
            return
        w.modules.add(key)
        w.checkitems(scope)
        out += b"W"
        for attr in sorted(k for k in scope if type(k) is str):
            if attr in MODULE_DUNDERS or attr in w.ignore:
                continue
            value = scope[attr]
            try:
                w.reference(attr, value, out)
            except FingerprintError:  # not used by name: its type stands for it (and is checked)
                out += b"!"
                encode_into(type(value).__qualname__, out)
        out += b"."

    def klass(self, cls: type, out: bytearray) -> None:
        w = self.walker
        if not is_user_code(cls.__module__):
            out += b"c"
            encode_into(installed_name(cls.__module__, cls.__qualname__), out)
            return
        if not w.enter(cls, out):
            return
        try:
            out += b"L"
            encode_into(cls.__qualname__, out)
            for base in cls.__bases__:
                self.klass(base, out)
            meta = type(cls)
            if meta is not type:
                out += b"T"
                self.klass(meta, out)
            scope = cls.__dict__
            w.checkitems(scope)  # also an attribute added later, shadowing an inherited one
            for attr in sorted(scope):
                value = scope[attr]
                if attr.startswith("__") and attr.endswith("__") and not isinstance(
                        value, (types.FunctionType, staticmethod, classmethod, property)):
                    continue
                encode_into(attr, out)
                try:
                    w.value(attr, value, out)
                except FingerprintError:  # a descriptor or similar: its type stands for it
                    encode_into(type(value).__qualname__, out)
        finally:
            w.leave()
