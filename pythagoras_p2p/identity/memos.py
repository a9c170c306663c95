"""Inputs read behind a memo: what a call depends on although it read nothing itself this time.

A helper behind ``functools.lru_cache`` (or a module-level memo dict the user told the
fingerprint to ignore) reads a file once per process: the first call that reaches it records the
read, every later call gets the cached value and raises no event at all, so its result would be
kept with no trace and answered after the file changed. So the process remembers, for every
*site* of the user's code that was on the stack when an input was recorded (a code object and the
offset of the instruction running in it: the ``open`` itself, or the call that led to it), the
inputs read beneath it, with their state at that read. When a call stops recording, the inputs
remembered at the sites of every code object its fingerprint reaches (:attr:`Identity.codes
<.fingerprint.Identity.codes>`: the functions walked and the code nested in them) are added to
its trace, except at sites that did record an input during this very call (they ran and read
what they read now; skipping them keeps a helper called once per path from piling every path it
ever read into every later trace).

A site that read again during the call (a loop that loads some names fresh and others from the
cache) is skipped whole: what it answered from the cache is not added. What a memo filled
outside any recording (at import) is not known at all.
"""

from __future__ import annotations

import os
import sys
import weakref
from types import CodeType

__all__ = ["remember", "add_unseen", "code_closure", "codes_of", "remembered"]

# code object → instruction offset → (kind, key) → state: what was read beneath each site
remembered: dict[CodeType, dict[int, dict[tuple[str, str], object]]] = {}
_user: dict[CodeType, bool] = {}
_walked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # function → its Identity
_OWN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "")


def _is_user_code(code: CodeType, roots: tuple[str, ...]) -> bool:
    found = _user.get(code)
    if found is None:
        name = code.co_filename
        found = _user[code] = not (name.startswith(roots) or name.startswith(_OWN)
                                   or name.startswith("<frozen"))
    return found


def remember(sites: set, root, entries, roots: tuple[str, ...]) -> None:
    """Inputs were recorded (``entries``: kind, key, state): remember them at every user site on
    the stack below ``root`` (the frame that started the recording) and count those sites as
    seen by the call (``sites``)."""
    if not entries:
        return
    frame = sys._getframe(1)
    while frame is not None and frame is not root:
        code = frame.f_code
        if _is_user_code(code, roots):
            offset = frame.f_lasti
            sites.add((code, offset))
            read = remembered.setdefault(code, {}).setdefault(offset, {})
            for kind, key, state in entries:
                read[(kind, key)] = state
        frame = frame.f_back


def add_unseen(add, sites: set, codes: frozenset | None) -> None:
    """``add(kind, key, state)`` for every input remembered at a site of ``codes`` (every code
    object when they are not known) that ``sites`` did not see."""
    for code in (list(remembered) if codes is None else codes):
        by_offset = remembered.get(code)
        if by_offset is None:
            continue
        for offset, read in list(by_offset.items()):  # copies: other threads may add
            if (code, offset) not in sites:
                for (kind, key), state in list(read.items()):
                    add(kind, key, state)


def code_closure(codes) -> frozenset:
    """The code objects and every code nested in them (inner functions, lambdas,
    comprehensions): what a walk of functions reaches runs their code too."""
    found: set = set()
    todo = list(codes)
    while todo:
        code = todo.pop()
        if code in found:
            continue
        found.add(code)
        todo.extend(c for c in code.co_consts if type(c) is CodeType)
    return frozenset(found)


def _same_functions(identity) -> bool:
    """The part of :meth:`Identity.holds` that says which functions a call reaches: no name
    rebound, no function given new code (identity tests only: no value hashed again)."""
    from .walk import ABSENT

    return (all(scope.get(key, ABSENT) is value for scope, key, value in identity.same)
            and all(entry[0].__code__ is entry[1] for entry in identity.funcs))


def codes_of(target) -> frozenset | None:
    """The code objects a call of ``target`` reaches: a pure function's own fingerprint walk,
    or (a plain function, as a worker runs it) a walk made here once per function object and
    made again when a name it resolved was rebound. None when it cannot be walked: every site
    counts."""
    identity = getattr(target, "_identity", None)
    codes = getattr(identity, "codes", None)
    if codes is not None:
        return codes
    func = getattr(target, "__pythagoras_function__", getattr(target, "func", target))
    try:
        identity = _walked.get(func)
        if identity is None or not _same_functions(identity):
            from .fingerprint import identify

            identity = _walked[func] = identify(func)
        return identity.codes
    except Exception:  # noqa: BLE001 - anything a walk refuses: conservative, every site
        return None
