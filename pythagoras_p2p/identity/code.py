"""Normalized code objects: what of a function's code counts for its fingerprint, and what it names.

A function's fingerprint hashes its *normalized code object* — its instructions with constants,
names and jump targets by value, argument layout — and leaves out what does not change behaviour:
the docstring, line numbers, column positions, the file name, annotations, and the choices the
compiler makes from the surrounding compilation unit. Code objects exist however a function was
made (a file, a notebook cell, ``python -c``, ``exec()``), so the same text gets the same
fingerprint in all four, where a source-based fingerprint would have nothing to read in two of them.
The bytecode belongs to one Python minor version, and so does the fingerprint.
"""

from __future__ import annotations

import dis
import struct
import types
from typing import Any

from .encoding import encode_into, encode_length

__all__ = ["qualified_name", "code_closure", "encode_code", "code_objects", "global_names", "all_names", "imports", "chains",
           "local_imports"]

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
_IMPORT_NAME = dis.opmap["IMPORT_NAME"]
_pack_H = struct.Struct("<H").pack


def qualified_name(func) -> str:
    """``module.qualname`` of a function (its wrapper's, for one whose inputs are not tracked):
    the name its results are stored under, which ``cache ls`` shows and ``cache forget`` takes.
    Two functions of one name in different modules are two functions."""
    func = getattr(func, "func", func) if type(func).__name__ == "Untracked" else func
    module = getattr(func, "__module__", None)
    return f"{module}.{func.__qualname__}" if module else func.__qualname__


def encode_code(code: types.CodeType, out: bytearray) -> None:
    """Append the normalized form of ``code`` (and of the code objects nested in it) to ``out``."""
    out += b"K"
    encode_into(
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
    instructions: list[dis.Instruction] = []
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
    encode_length(len(instructions), out)
    for ins in instructions:
        op = ins.opcode
        out += _pack_H(_SAME_OP.get(op, op))
        if op in _HAS_CONST:
            if isinstance(ins.argval, types.CodeType):
                encode_code(ins.argval, out)
            else:
                encode_into(ins.argval, out)
        elif op in _HAS_NAME:
            encode_into(ins.argval, out)
        elif op in _HAS_JUMP:
            encode_into(ordinal.get(ins.argval, ins.argval), out)
        else:
            encode_into(ins.arg, out)
    out += b"x"
    for entry in getattr(bytecode, "exception_entries", ()):
        encode_into(
            tuple(ordinal.get(o, o) for o in (entry.start, entry.end, entry.target))
            + (entry.depth, entry.lasti),
            out,
        )


def code_objects(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from code_objects(const)


def global_names(code: types.CodeType) -> set[str]:
    """The global names that ``code`` reads or writes (co_names also holds attribute names)."""
    return {
        ins.argval
        for c in code_objects(code)
        for ins in dis.get_instructions(c)
        if ins.opcode in _GLOBAL_OPS
    }


def all_names(code: types.CodeType) -> set[str]:
    """Every name the code uses of globals, attributes and imports: what it may take from a
    module. String constants that could be names count too (``getattr(mylib, "K")``)."""
    names = set()
    for c in code_objects(code):
        names.update(c.co_names)
        names.update(k for k in c.co_consts if type(k) is str and k.isidentifier())
    return names


def imports(code: types.CodeType):
    """(name, level, fromlist) of every ``import`` in the code, nested functions included."""
    for c in code_objects(code):
        previous: list = []
        for ins in dis.get_instructions(c):
            if ins.opcode == _IMPORT_NAME and len(previous) >= 2:
                level, fromlist = previous[-2].argval, previous[-1].argval
                if isinstance(level, int):
                    yield ins.argval, level, tuple(fromlist or ())
            previous = [*previous[-1:], ins]


_ROOTS = {
    **{dis.opmap[n]: "global" for n in ("LOAD_GLOBAL", "LOAD_NAME") if n in dis.opmap},
    **{dis.opmap[n]: "deref" for n in ("LOAD_DEREF", "LOAD_CLASSDEREF") if n in dis.opmap},
    **{dis.opmap[n]: "fast" for n in ("LOAD_FAST", "LOAD_FAST_CHECK") if n in dis.opmap},
}
_ATTRS = frozenset(dis.opmap[n] for n in ("LOAD_ATTR", "LOAD_METHOD") if n in dis.opmap)
_LOAD_CONST = dis.opmap["LOAD_CONST"]
_STORES = frozenset(
    dis.opmap[n] for n in ("STORE_FAST", "STORE_NAME", "STORE_DEREF", "STORE_GLOBAL") if n in dis.opmap
)
_IMPORT_FROM = dis.opmap["IMPORT_FROM"]
_CALLS = frozenset(
    dis.opmap[n] for n in ("PRECALL", "CALL", "CALL_FUNCTION", "CALL_METHOD", "CALL_FUNCTION_KW")
    if n in dis.opmap
)


def _instructions(code: types.CodeType) -> list:
    return [ins for ins in dis.get_instructions(code) if ins.opcode not in _SKIP]


def chains(code: types.CodeType):
    """``(kind, names, args)`` for every name the code loads followed by the attributes it reads of
    it: ``np.random.rand(3)`` gives ``("global", ("np", "random", "rand"), (("const", 3),))``.
    ``kind`` is ``global``, ``deref`` (a closure cell) or ``fast`` (a local); ``args`` holds the
    simple expressions that follow (what a call is given when the chain is called): a constant
    ``("const", value)`` or a name ``(kind, name)``: all of them when every argument of the call
    is that simple, none otherwise."""
    for c in code_objects(code):
        ins = _instructions(c)
        for i, first in enumerate(ins):
            kind = _ROOTS.get(first.opcode)
            if kind is None:
                continue
            names = [first.argval]
            j = i + 1
            while j < len(ins) and ins[j].opcode in _ATTRS:
                names.append(ins[j].argval)
                j += 1
            args: list[tuple[str, Any]] = []
            while j < len(ins) and len(args) < 4:
                op = ins[j].opcode
                if op == _LOAD_CONST:
                    args.append(("const", ins[j].argval))
                elif op in _ROOTS:
                    args.append((_ROOTS[op], ins[j].argval))
                    while j + 1 < len(ins) and ins[j + 1].opcode in _ATTRS:
                        j += 1
                else:
                    break
                j += 1
            # Simple only if the call follows them: in `getattr(m, "AB"[i])`, "AB" is not the name.
            if not (j < len(ins) and ins[j].opcode in _CALLS):
                args = []
            yield kind, tuple(names), tuple(args)


def local_imports(code: types.CodeType) -> dict[str, str]:
    """The local names that imports inside the body bind, with what they import:
    ``import time as t`` gives ``{"t": "time"}``, ``from os import path`` ``{"path": "os.path"}``
    (the dotted name may be an attribute rather than a module)."""
    found: dict[str, str] = {}
    for c in code_objects(code):
        ins = _instructions(c)
        for i, one in enumerate(ins[:-1]):
            after = ins[i + 1]
            if one.opcode == _IMPORT_NAME and after.opcode in _STORES:
                top = one.argval.split(".", 1)[0]  # `import a.b` binds `a`
                found[after.argval] = top if after.argval == top else one.argval
            elif one.opcode == _IMPORT_FROM and after.opcode in _STORES:
                head = next((p.argval for p in reversed(ins[:i]) if p.opcode == _IMPORT_NAME), "")
                found[after.argval] = f"{head}.{one.argval}" if head else one.argval
    return found


def code_closure(codes) -> frozenset:
    """The ids of the code objects and of every code nested in them (inner functions, lambdas,
    comprehensions): what a walk of functions reaches runs their code too. The functions the
    identity holds keep them alive."""
    found: set[int] = set()
    todo = list(codes)
    while todo:
        code = todo.pop()
        if id(code) in found:
            continue
        found.add(id(code))
        todo.extend(c for c in code.co_consts if type(c) is types.CodeType)
    return frozenset(found)
