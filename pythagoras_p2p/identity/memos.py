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
from types import CodeType, FrameType

from .code import code_closure

__all__ = ["OWN_CODE", "remember", "add_unseen", "code_closure", "codes_of", "remembered"]

# code_closure lives with the other readings of code objects (.code); it is named here too.

# id of a code object → (the code, kept alive so its id is not reused; instruction offset →
# (kind, key) → state): what was read beneath each site. Keyed by id: a code object's hash is
# computed from its whole content at every lookup.
remembered: dict[int, tuple[CodeType, dict[int, dict[tuple[str, str], object]]]] = {}
_user: dict[int, tuple[CodeType, bool]] = {}  # id of a code object → (the code, is it the user's)
_walked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # function → its Identity
# Frames of .inputs there always are above this function (``Recorder.merge``, ``stop``; or
# ``_remember``, a recording method, the hook): skipped without looking at them.
_OWN_FRAMES = 3
OWN_CODE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "")


def _is_user_code(code: CodeType, roots: tuple[str, ...]) -> bool:
    found = _user.get(id(code))
    if found is None or found[0] is not code:
        name = code.co_filename
        found = _user[id(code)] = (code, not (name.startswith(roots) or name.startswith(OWN_CODE)
                                              or name.startswith("<frozen")))
    return found[1]


def remember(sites: set, root, entries, roots: tuple[str, ...]) -> None:
    """Inputs were recorded (``entries``: kind, key, state): remember them at every user site on
    the stack below ``root`` (the frame that started the recording) and count those sites as
    seen by the call (``sites``)."""
    if not entries:
        return
    frame: FrameType | None = sys._getframe(_OWN_FRAMES)
    while frame is not None and frame is not root:
        code = frame.f_code
        key = id(code)
        user = _user.get(key)
        if user is None or user[0] is not code:
            user = (code, _is_user_code(code, roots))
        if user[1]:
            offset = frame.f_lasti
            sites.add((key, offset))
            kept = remembered.get(key)
            if kept is None:
                kept = remembered[key] = (code, {})
            read = kept[1].get(offset)
            if read is None:
                read = kept[1][offset] = {}
            for kind, name, state in entries:
                read[(kind, name)] = state
        frame = frame.f_back


def add_unseen(add, sites: set, codes: frozenset | None) -> None:
    """``add(kind, key, state)`` for every input remembered at a site of ``codes`` (ids of code
    objects; every code object when they are not known) that ``sites`` did not see."""
    for code in (list(remembered) if codes is None else codes):
        kept = remembered.get(code)
        if kept is None:
            continue
        for offset, read in list(kept[1].items()):  # copies: other threads may add
            if (code, offset) not in sites:
                for (kind, key), state in list(read.items()):
                    add(kind, key, state)


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
