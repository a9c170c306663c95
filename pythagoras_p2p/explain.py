"""Why a call is not a hit: ``f.explain(**kw)``, and the stored versions of a function.

A memoizing tool is only as useful as its misses are understandable. ``f.explain(x=1)`` compares
the call with what this machine's store holds of the same function and says which component
differs from the nearest stored call:

* the call is stored and every run-time input it recorded still holds: it is a hit;
* the call is stored but a file it read or an environment variable it looked at changed since:
  it will be computed again (named);
* another call of the *same version* of the function is stored: the arguments that differ;
* only other versions are stored: the parts of the fingerprint that differ from the nearest one
  (the function's own code, a helper, a global, a module attribute, a package's version, a
  default, a closure cell), then the arguments against that version's nearest call;
* nothing of the function is stored: never computed.

Versions are told apart by the *manifest* each function record carries (a digest per top-level
part of the fingerprint, see :meth:`~.identity.fingerprint.Identity.manifest`); arguments by
the short argument digests each result's metadata keeps (``"args"``). Nothing here runs on the hit
path: an explanation reads the store's metadata once.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .identity.calls import argument_digests, call_address
from .store.listing import stored_versions

__all__ = ["Difference", "Explanation", "explain"]

HIT = "hit"
INPUTS_CHANGED = "inputs changed"
MISS = "miss"
NEVER = "never computed"


@dataclass(frozen=True)
class Difference:
    """One thing that differs between this call and the nearest stored one.

    ``kind``: ``"code"``, ``"helper"``, ``"global"``, ``"module"``, ``"package"``, ``"default"``,
    ``"closure"``, ``"argument"``, ``"file"``, ``"environment"`` or ``"other"``; ``name`` what it
    is (``"global CONFIG"``, ``"argument x"``, a path); ``change``: ``"changed"``, ``"added"``
    (this call has it, the stored one had not), ``"removed"``, or what changed in words.
    """

    kind: str
    name: str
    change: str

    def __str__(self) -> str:
        return f"{self.name}: {self.change}"


@dataclass(frozen=True)
class Explanation:
    """Why ``function(**arguments)`` is or is not a hit here (see :func:`explain`)."""

    function: str
    call: str  # the call address, hex
    verdict: str  # "hit", "inputs changed", "miss" or "never computed"
    differences: tuple[Difference, ...] = ()
    nearest: str | None = None  # the address of the nearest stored call, hex
    nearest_stored: _dt.datetime | None = None
    same_version: bool | None = None  # the nearest stored call is of this very version
    versions: int = 0  # versions of the function stored here
    results: int = 0  # results of the function stored here, all versions
    hints: tuple[str, ...] = field(default=())

    @property
    def hit(self) -> bool:
        return self.verdict == HIT

    def __str__(self) -> str:
        head = f"{self.function}: call {self.call[:16]}"
        if self.verdict == HIT:
            lines = [f"{head} is stored and every input it recorded still holds: a hit"]
        elif self.verdict == NEVER:
            lines = [f"{head} is not stored, and no call of {self.function} is stored here: "
                     f"never computed"]
        elif self.verdict == INPUTS_CHANGED:
            lines = [f"{head} is stored, but inputs it read when it ran have changed since; "
                     f"it will be computed again:"]
        else:
            when = "" if self.nearest_stored is None else \
                f", stored {self.nearest_stored:%Y-%m-%d %H:%M:%S} UTC"
            which = "of this version" if self.same_version else "of another version"
            lines = [f"{head} is not stored ({self.results} result(s) of {self.versions} "
                     f"version(s) are); the nearest stored call is {(self.nearest or '')[:16]} "
                     f"{which}{when}; it differs in:"]
        width = max((len(d.name) for d in self.differences), default=0)
        lines += [f"  {d.name.ljust(width)}  {d.change}" for d in self.differences]
        lines += [f"  hint: {h}" for h in self.hints]
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython shows it readably
        printer.text(str(self))


def explain(fn: Any, kwargs: Mapping[str, Any]) -> Explanation:
    """Why ``fn(**kwargs)`` is or is not a hit in this machine's store; nothing is computed."""
    from .identity.inputs import changed

    bound = fn.bind((), dict(kwargs))
    identity = fn.identity()
    call, addresses = call_address(identity.fp, bound, named=fn.named)
    fn.cloud._results.settle()
    store = fn.cloud.store
    versions = stored_versions(store, fn.qualified_name)
    results = sum(v.results for v in versions)
    base = {"function": fn.name, "call": call.hex(), "versions": len(versions), "results": results}
    meta = store.get_meta(call) if store.result_entry(call) is not None else None
    if meta is not None:
        inputs = tuple(_input_difference(text) for text in changed(meta.get("inputs")))
        if not inputs:
            return Explanation(verdict=HIT, **base)
        return Explanation(verdict=INPUTS_CHANGED, differences=inputs, nearest=call.hex(),
                           nearest_stored=_when(meta), same_version=True, **base)
    if not versions:
        return Explanation(verdict=NEVER, **base)
    now_args = argument_digests(bound, addresses)
    manifest = identity.manifest()
    best: tuple | None = None
    for version in versions:
        code = () if version.fingerprint == identity.fp.hex() else \
            _code_differences(manifest, version.manifest)
        for stored_call, stored_meta in version.calls:
            args = _argument_differences(now_args, stored_meta.get("args"))
            rank = (len(code) + len(args), -(stored_meta.get("stored") or 0.0))
            if best is None or rank < best[0]:
                best = (rank, code + args, stored_call, stored_meta, not code and
                        version.fingerprint == identity.fp.hex())
    if best is None:  # its versions hold no results now (removed by `cache gc`)
        return Explanation(verdict=NEVER, **base)
    _, differences, nearest, nearest_meta, same = best
    return Explanation(verdict=MISS, differences=differences, nearest=nearest.hex(),
                       nearest_stored=_when(nearest_meta), same_version=same,
                       hints=_hints(fn, differences), **base)


def _when(meta: Mapping[str, Any]) -> _dt.datetime | None:
    stored = meta.get("stored")
    if not isinstance(stored, (int, float)):
        return None
    return _dt.datetime.fromtimestamp(stored, _dt.UTC)


_CHANGES = ("changed", "appeared", "is gone", "was set", "was unset")


def _input_difference(text: str) -> Difference:
    """A recorded input that no longer holds, as ``identity.inputs.changed`` says it."""
    for change in _CHANGES:
        if text.endswith(" " + change):
            name = text[: -len(change) - 1]
            kind = "environment" if name.startswith("environment") else name.split(" ", 1)[0]
            return Difference(kind, name, change)
    return Difference("other", text, "changed")


_KINDS = ("code", "helper", "global", "module", "package", "default", "closure", "class",
          "attribute", "import")


def _kind(label: str) -> str:
    first = label.split(" ", 1)[0]
    return first if first in _KINDS else "other"


def _code_differences(now: Mapping[str, str], stored: Mapping[str, str] | None
                      ) -> tuple[Difference, ...]:
    """What differs between two manifests (label -> digest), in label order."""
    if stored is None:  # a record made before manifests: nothing to compare part by part
        return (Difference("other", "the function's code or what it reaches",
                           "changed (the stored version predates explain: no parts to compare)"),)
    found = []
    for label in sorted(now.keys() | stored.keys()):
        mine, theirs = now.get(label), stored.get(label)
        if mine == theirs:
            continue
        change = "added" if theirs is None else "removed" if mine is None else "changed"
        found.append(Difference(_kind(label), label, change))
    if not found:  # the same parts, another fingerprint: e.g. another Python version
        found.append(Difference("other", "the fingerprint", "changed (Python's version, or the "
                                "fingerprint's own version)"))
    return tuple(found)


def _argument_differences(now: Mapping[str, str], stored: Any) -> tuple[Difference, ...]:
    if not isinstance(stored, Mapping):
        return (Difference("argument", "arguments", "unknown (stored without argument digests)"),)
    found = []
    for name in sorted(now.keys() | stored.keys()):
        mine, theirs = now.get(name), stored.get(name)
        if mine != theirs:
            change = "added" if theirs is None else "removed" if mine is None else "differs"
            found.append(Difference("argument", f"argument {name}", change))
    if not found and list(now) != list(stored):
        found.append(Difference("argument", "arguments", "given in another order"))
    return tuple(found)


def _hints(fn: Any, differences: tuple[Difference, ...]) -> tuple[str, ...]:
    names = [d.name.split(" ", 1)[1] for d in differences
             if d.kind == "global" and d.change == "changed" and " " in d.name]
    if not names:
        return ()
    listed = ", ".join(repr(n) for n in names)
    return (f"if {listed} is not an input of {fn.name} (a cache, a counter, a lock), declare "
            f"it: add_pure_function(ignore_globals=({listed},)); that is your promise that its "
            f"value never changes a result",)
