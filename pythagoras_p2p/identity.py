"""What makes two calls the same: function fingerprints and call addresses.

A function's fingerprint hashes its *normalized code object* — its instructions with constants,
names and jump targets by value, argument layout — and leaves out what does not change behaviour:
the docstring, line numbers, column positions, the file name, annotations, and the choices the
compiler makes from the surrounding compilation unit. Code objects exist however a function was
made (a file, a notebook cell, ``python -c``, ``exec()``), so the same text gets the same
fingerprint in all four, where a source-based fingerprint would have nothing to read in two of them.

To that the fingerprint adds every global the code reaches, resolved at the first call:

* another pure function or a plain function of the user's own code: fingerprinted by the same
  rule, recursively; a cycle (recursion, mutual recursion) is recorded as a back reference to the
  position of the function on the path, so it terminates and stays deterministic;
* a module: by name; a function or class of an installed package: by qualified name;
* anything else: by value (its content address); a value that cannot be hashed is an error.

The bytecode belongs to one Python minor version, and so does the fingerprint.
"""

from __future__ import annotations

import builtins
import dis
import os
import struct
import sys
import sysconfig
import types
from typing import Any

from blake3 import blake3

from .encoding import Address, _encode, _len, value_address
from .errors import FingerprintError, SerializationError

__all__ = ["fingerprint", "call_address", "approx_nbytes", "is_user_code"]

_FINGERPRINT_VERSION = b"pythagoras-fn-1\0" + f"py{sys.version_info[0]}.{sys.version_info[1]}".encode()
_CALL_VERSION = b"pythagoras-call-1\0"

# Flags that change what a code object does; the rest (e.g. CO_NESTED) depend on where it was defined.
_CO_MASK = (
    0x0004  # CO_VARARGS
    | 0x0008  # CO_VARKEYWORDS
    | 0x0020  # CO_GENERATOR
    | 0x0080  # CO_COROUTINE
    | 0x0100  # CO_ITERABLE_COROUTINE
    | 0x0200  # CO_ASYNC_GENERATOR
)


# What the compiler picks by context rather than by meaning: ``m.f(x)`` compiles to LOAD_METHOD
# (3.11; a flag of LOAD_ATTR later) unless ``import m`` is in the same compilation unit, then to a
# NULL push and LOAD_ATTR. A notebook compiles each statement on its own, a file all at once, so
# the same text differs. The NULL push (PUSH_NULL, or a flag of LOAD_GLOBAL that the name-valued
# argval leaves out) is dropped and LOAD_METHOD counts as LOAD_ATTR. So are the NOPs that only
# carry a line number (``try:`` on a line of its own has one, ``try: x = 1`` not).
_SKIP = frozenset(
    dis.opmap[name] for name in ("EXTENDED_ARG", "PUSH_NULL", "NOP") if name in dis.opmap
)
_SAME_OP = {dis.opmap[a]: dis.opmap[b] for a, b in [("LOAD_METHOD", "LOAD_ATTR")] if a in dis.opmap}
_HAS_CONST = frozenset(dis.hasconst)
_HAS_NAME = frozenset(dis.hasname) | frozenset(dis.haslocal) | frozenset(dis.hasfree)
_HAS_JUMP = frozenset(dis.hasjrel) | frozenset(dis.hasjabs)
_GLOBAL_OPS = frozenset(
    dis.opmap[name]
    for name in (
        "LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_FROM_DICT_OR_GLOBALS"
    )
    if name in dis.opmap
)
_pack_H = struct.Struct("<H").pack


def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots |= {os.path.dirname(os.__file__), sys.base_prefix, sys.prefix}
    return tuple(os.path.realpath(r) + os.sep for r in roots)


_INSTALLED_ROOTS = _installed_roots()
_BY_NAME_PACKAGES = ("pythagoras_p2p",)


def is_user_code(module_name: str | None) -> bool:
    """True for code the user writes (``__main__``, a notebook, a module of their own project).

    Such code is fingerprinted by content and travels by value; code of installed packages and
    the standard library is referred to by name.
    """
    if not module_name or module_name == "__main__":
        return True
    if module_name.split(".", 1)[0] in _BY_NAME_PACKAGES or module_name in sys.builtin_module_names:
        return False
    module = sys.modules.get(module_name)
    if module is None:
        return True  # made by exec() under an invented name: nothing to import it by
    path = getattr(module, "__file__", None)
    if not path:
        return False
    return not os.path.realpath(path).startswith(_INSTALLED_ROOTS)


class _Fingerprinter:
    """One depth-first walk from a root function; ``path`` holds the functions being walked."""

    def __init__(self, owner: str):
        self.owner = owner
        self.path: dict[int, int] = {}  # id(function) -> depth

    def function(self, func: types.FunctionType, out: bytearray) -> None:
        key = id(func)
        if key in self.path:
            out += b"<" + str(self.path[key]).encode() + b">"
            return
        self.path[key] = len(self.path)
        try:
            out += b"F"
            self.code(func.__code__, out)
            self.globals_of(func, out)
            if func.__closure__:
                out += b"C"
                for name, cell in zip(func.__code__.co_freevars, func.__closure__, strict=True):
                    try:
                        contents = cell.cell_contents
                    except ValueError:  # an empty cell: the name is bound later
                        contents = None
                    self.reference(name, contents, out)
        finally:
            del self.path[key]

    def code(self, code: types.CodeType, out: bytearray) -> None:
        out += b"K"
        _encode(
            (
                code.co_name,
                code.co_argcount,
                code.co_posonlyargcount,
                code.co_kwonlyargcount,
                code.co_flags & _CO_MASK,
                code.co_varnames,
                code.co_freevars,
                code.co_cellvars,
            ),
            out,
        )
        # The instructions, not co_code: constants by value where they are used (so an unused
        # docstring drops out, and with it the shift it causes in the indices of the others),
        # names by name, jump targets by instruction number rather than byte offset.
        bytecode = dis.Bytecode(code)
        instructions = []
        ordinal: dict[int, int] = {}
        pending: list[int] = []
        for ins in bytecode:
            pending.append(ins.offset)
            if ins.opcode not in _SKIP:
                for offset in pending:
                    ordinal[offset] = len(instructions)
                pending.clear()
                instructions.append(ins)
        for offset in [*pending, len(code.co_code)]:
            ordinal[offset] = len(instructions)
        out += b"k"
        _len(len(instructions), out)
        for ins in instructions:
            op = ins.opcode
            out += _pack_H(_SAME_OP.get(op, op))
            if op in _HAS_CONST:
                if isinstance(ins.argval, types.CodeType):
                    self.code(ins.argval, out)
                else:
                    _encode(ins.argval, out)
            elif op in _HAS_NAME:
                _encode(ins.argval, out)
            elif op in _HAS_JUMP:
                _encode(ordinal.get(ins.argval, ins.argval), out)
            else:
                _encode(ins.arg, out)
        out += b"x"
        for entry in getattr(bytecode, "exception_entries", ()):
            _encode(
                tuple(ordinal.get(o, o) for o in (entry.start, entry.end, entry.target))
                + (entry.depth, entry.lasti),
                out,
            )

    def globals_of(self, func: types.FunctionType, out: bytearray) -> None:
        names = sorted(_referenced_names(func.__code__))
        scope = func.__globals__
        builtin_scope = scope.get("__builtins__", builtins)
        if isinstance(builtin_scope, types.ModuleType):
            builtin_scope = builtin_scope.__dict__
        out += b"G"
        for name in names:
            if name in scope:
                self.reference(name, scope[name], out)
            elif name in builtin_scope:
                out += b"b"
                _encode(name, out)
            # else: an attribute name, or a global not defined yet (then the call fails anyway)

    def reference(self, name: str, value: Any, out: bytearray) -> None:
        _encode(name, out)
        inner = getattr(value, "__pythagoras_function__", None)
        if inner is not None:  # a pure function of a cloud: fingerprinted through its code
            out += b"P"
            self.function(inner, out)
        elif isinstance(value, types.FunctionType):
            if is_user_code(value.__module__):
                self.function(value, out)
            else:
                out += b"q"
                _encode(f"{value.__module__}.{value.__qualname__}", out)
        elif isinstance(value, types.ModuleType):
            out += b"m"
            _encode(value.__name__, out)
        elif isinstance(value, type):
            self.klass(value, out)
        elif isinstance(value, (types.BuiltinFunctionType, types.MethodWrapperType)) or (
            callable(value) and hasattr(value, "__qualname__")
            and not is_user_code(getattr(value, "__module__", None))
        ):
            out += b"q"
            _encode(f"{getattr(value, '__module__', None)}.{value.__qualname__}", out)
        else:
            try:
                out += b"v" + value_address(value)
            except SerializationError:
                raise FingerprintError(
                    f"pure function {self.owner!r} uses the global {name!r} (a "
                    f"{type(value).__qualname__}), which cannot be fingerprinted because it cannot "
                    f"be pickled; import or create it inside the function body, or pass it as an "
                    f"argument"
                ) from None

    def klass(self, cls: type, out: bytearray) -> None:
        if not is_user_code(cls.__module__):
            out += b"c"
            _encode(f"{cls.__module__}.{cls.__qualname__}", out)
            return
        key = id(cls)
        if key in self.path:
            out += b"<" + str(self.path[key]).encode() + b">"
            return
        self.path[key] = len(self.path)
        try:
            out += b"L"
            _encode(cls.__qualname__, out)
            for base in cls.__bases__:
                self.klass(base, out)
            for attr, value in sorted(vars(cls).items()):
                if isinstance(value, (staticmethod, classmethod)):
                    value = value.__func__
                if isinstance(value, property):
                    value = value.fget
                if isinstance(value, types.FunctionType):
                    _encode(attr, out)
                    self.function(value, out)
                elif not attr.startswith("__"):
                    try:
                        self.reference(attr, value, out)
                    except FingerprintError:  # a descriptor or similar: its type stands for it
                        _encode(type(value).__qualname__, out)
        finally:
            del self.path[key]


def _referenced_names(code: types.CodeType) -> set[str]:
    """The global names that ``code`` reads or writes (co_names also holds attribute names)."""
    names = {ins.argval for ins in dis.get_instructions(code) if ins.opcode in _GLOBAL_OPS}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _referenced_names(const)
    return names


def fingerprint(func: types.FunctionType, name: str | None = None) -> Address:
    """The 32-byte fingerprint of ``func`` and of everything it reaches through its globals."""
    out = bytearray(_FINGERPRINT_VERSION)
    _Fingerprinter(name or func.__name__).function(func, out)
    return blake3(out).digest()


def call_address(
    fp: Address, kwargs: dict[str, Any], memo: dict[int, tuple[Any, Address]] | None = None
) -> tuple[Address, dict[str, Address]]:
    """The address of one call, and the value address of each argument.

    It hashes the function's fingerprint with the sorted argument names and their values'
    addresses, so the order in which arguments are given does not matter. ``memo`` (object id →
    (object, address)) lets many calls that share a large argument hash it once.
    """
    out = bytearray(_CALL_VERSION)
    out += fp
    addresses = {}
    for name in sorted(kwargs):
        value = kwargs[name]
        if memo is not None and approx_nbytes(value) >= _MEMO_FROM:
            hit = memo.get(id(value))
            if hit is None:
                hit = memo[id(value)] = (value, value_address(value))
            address = hit[1]
        else:
            address = value_address(value)
        addresses[name] = address
        out += name.encode()
        out += b"\0"
        out += address
    return blake3(out).digest(), addresses


_MEMO_FROM = 1 << 16


def approx_nbytes(value: Any) -> int:
    """A cheap estimate of the size of a large value (bytes, numpy, pandas), else 0."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    if type(value).__module__.startswith(("numpy", "pandas")):
        nbytes = getattr(value, "nbytes", None)
        if isinstance(nbytes, int):
            return nbytes
        usage = getattr(value, "memory_usage", None)
        if usage is not None:
            try:
                return int(usage(index=True, deep=False).sum())
            except Exception:
                return 0
    return 0
