"""Verifying traces: the files, directories and environment variables a call read, checked before a hit.

A call's address covers its code and its arguments, not what it reads at run time: a function
that calls ``pd.read_csv(path)`` or ``os.environ.get("MODE")`` would get its old result after
the file or the variable changed. So while a call runs, the thread that runs it records:

* every file it opens for reading, or ``"r+"`` (the ``open`` audit event of ``open``,
  ``io.open``, ``os.open``, ``pathlib``): path → blake3 of its content, taken when it is opened, with its
  stat fields — a check of an unchanged file is then one ``stat``. A file absent when opened is
  recorded as absent (the call may have caught the error);
* every directory it lists (``os.listdir``, ``os.scandir``: ``glob``, ``os.walk``,
  ``Path.iterdir``): path → blake3 of its sorted entry names, so a file added to a folder the
  call processes is seen;
* every path whose stat it asks for (``os.path.exists``, ``getsize``, ``isfile``,
  ``Path.is_file``, ``os.stat``: ``os.stat`` and ``os.lstat`` are replaced at the first
  recording; the import system and the checks keep the originals): path → its file type, size
  and mtime, or absent;
* every environment variable it reads through ``os.environ`` or ``os.environb`` (``[]``,
  ``get``, ``in``, ``os.getenv``): name → value, or absent;
* the working directory, when a path it named was relative.

Inputs a memo read in an earlier call of the process (``lru_cache``) are added when the call
stops: :mod:`.memos`.

The hooks that see the reads are :mod:`.hooks`; the states and their checks are :mod:`.traces`. The trace is kept with the result (its
metadata, key ``inputs``; only results that read something have one), and a hit is answered only
while every recorded input still holds on the machine that asks; otherwise the call is computed
again and its new result replaces the old.

Not recorded: what lies under the interpreter's prefixes and the standard library, Python
sources and extensions under ``sys.path`` (the fingerprint covers the user's code) and the
import system's listings, what this package's own code opens, lists or stats (the first frame
above the standard library is its own), ``/proc``, ``/sys``, ``/dev``, the store's own home,
files and directories the call itself made, removed, renamed or opened for writing first (a
stat of them taken before is dropped), variables named ``PYTHAGORAS_*``
and those the worker pool sets (``CUDA_VISIBLE_DEVICES``, thread counts); reads by threads
made before the call (a pool kept from an earlier call: threads the call starts record into its
trace), by processes it starts, and by C code that opens files itself (not through Python's
``open``). A function may opt out (``add_pure_function(track_inputs=False)``): nothing is
recorded for it.
"""

from __future__ import annotations

import json
import os
import sys

from . import hooks, traces
from .memos import add_unseen, codes_of, remember, remembered
from .traces import RACY_NS, changed, encode_trace, trace_holds
from .untracked import Untracked, untracked, untracked_fingerprint

__all__ = ["Recorder", "start", "stop", "holds", "holds_raw", "changed", "note", "exclude_root",
           "encode_trace", "untracked", "untracked_fingerprint", "Untracked", "RACY_NS"]

_CACHE_KEPT = 4096
_ENV_PREFIX_IGNORED = "PYTHAGORAS_"
# Set by the worker pool, per worker or per call, where they are not set already: placement
# (the GPUs a call was given) and thread counts, which never change what a call returns, and
# would otherwise differ between a worker and the caller that checks the trace.
_ENV_IGNORED = frozenset({
    "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "BLIS_NUM_THREADS"})
_SOURCE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyd", ".so", ".pth")
_ACCMODE = getattr(os, "O_ACCMODE", 3)


_roots: tuple[str, ...] = hooks.FIXED  # never recorded: grows with exclude_root
_fixed = hooks.FIXED  # where no code of the user's lies (memos.remember)


def exclude_root(path: str | os.PathLike) -> None:
    """Never record reads under ``path`` (a store's home: its own files are not inputs)."""
    global _roots
    for form in {os.path.abspath(path), os.path.realpath(path)}:
        root = os.path.join(form, "")
        if root not in _roots:
            _roots = (*_roots, root)


def _is_source(path: str) -> bool:
    if not path.endswith(_SOURCE_SUFFIXES):
        return False
    for entry in sys.path:
        if path.startswith(os.path.join(os.path.abspath(entry or "."), "")):
            return True
    return False


# ---------------------------------------------------------------------- recording


class Recorder:
    """The inputs one call read so far (see the module docstring); one per running call and
    thread, nested calls merging theirs into their caller's."""

    __slots__ = ("files", "dirs", "env", "stats", "lstats", "cwd", "written", "parent", "root",
                 "sites")

    def __init__(self, parent: Recorder | None, root=None):
        self.files: dict[str, list | None] = {}
        self.dirs: dict[str, list | None] = {}
        self.env: dict[str, str | None] = {}
        self.stats: dict[str, list | None] = {}  # os.stat of a path: exists, getsize, is_file
        self.lstats: dict[str, list | None] = {}  # os.lstat: islink, lexists
        self.cwd: str | None = None  # the working directory, when a relative path was used
        self.written: set[str] = set()  # made or opened for writing by the call: its own output
        self.parent = parent
        self.root = root  # the frame that started the recording (see memos.remember)
        self.sites: set = set()  # the user's code sites that read an input during the call

    def _path(self, path) -> str | None:
        """The absolute path of an event's argument, or None when it is not to be recorded."""
        if type(path) is int or getattr(hooks.local, "busy", False):  # its own hashing or listing
            return None
        if path is None:
            path = "."
        elif type(path) is not str:
            try:
                path = os.fsdecode(path)
            except TypeError:
                return None
        relative = not os.path.isabs(path)
        path = os.path.abspath(path)
        if path in self.written or path.startswith(_roots) or _is_source(path):
            return None
        if relative:  # the same name elsewhere is another file
            self._cwd()
        return path

    def _cwd(self) -> None:
        try:
            cwd = os.getcwd()
        except OSError:
            return
        if self.cwd is None:
            self.cwd = cwd
        self._remember("cwd", "", cwd)

    def opened(self, path, flags) -> None:
        path = self._path(path)
        if path is None:
            return
        if type(flags) is int and not _reads(flags):
            self.written.add(path)
            self.stats.pop(path, None)  # checked before the call made it: its own output
            self.lstats.pop(path, None)
            return
        self._keep(self.files, "files", path, traces.file_state)

    def listed(self, path) -> None:
        path = self._path(path)
        if path is not None:
            self._keep(self.dirs, "dirs", path, traces.dir_state)

    def statted(self, path, st, follow: bool) -> None:
        """The call got ``st`` (None: the path is absent) from ``os.stat`` or ``os.lstat``."""
        path = self._path(path)
        if path is None:
            return
        kept, kind = (self.stats, "stats") if follow else (self.lstats, "lstats")
        # the last state the call got: a path polled until it appears (a "go" file, a peer's
        # output) was seen absent, then present, and the call went on from what it saw last;
        # keeping the first state would make its stored result stale as soon as it is stored
        state = kept[path] = None if st is None else traces.stat_of(st)
        self._remember(kind, path, state)

    def made(self, path) -> None:
        path = self._path(path)
        if path is not None:
            self.written.add(path)
            self.stats.pop(path, None)
            self.lstats.pop(path, None)

    def _keep(self, kept: dict, kind: str, path: str, state_of) -> None:
        state = kept.get(path, False)
        if state is False:
            hooks.local.busy = True
            try:
                state = state_of(path)
            finally:
                hooks.local.busy = False
            if state is False:
                return
            kept[path] = state
        self._remember(kind, path, state)

    def _remember(self, kind: str, key: str, state) -> None:
        remember(self.sites, self.root, ((kind, key, state),), _fixed)

    def read_env(self, name, value) -> None:
        if type(name) is bytes:  # os.environb
            name = os.fsdecode(name)
            value = None if value is None else os.fsdecode(value)
        if (type(name) is str and name not in _ENV_IGNORED
                and not name.startswith(_ENV_PREFIX_IGNORED)):
            self.env.setdefault(name, value)
            self._remember("env", name, value)

    def add(self, kind: str, key: str, state) -> None:
        """Add one input read elsewhere (a nested call, a memo), unless this call read it."""
        if kind == "cwd":
            if self.cwd is None:
                self.cwd = state
        else:
            getattr(self, kind).setdefault(key, state)

    def merge(self, trace: dict) -> None:
        """Add the inputs of a nested call (computed here, or answered from the store),
        remembered at this call's sites that led to it (a memo may hold its result)."""
        entries = []
        for kind in _KINDS:
            kept = getattr(self, kind)
            for key, state in trace.get(kind, {}).items():
                kept.setdefault(key, state)
                entries.append((kind, key, state))
        cwd = trace.get("cwd")
        if cwd is not None:
            if self.cwd is None:
                self.cwd = cwd
            entries.append(("cwd", "", cwd))
        remember(self.sites, self.root, entries, _fixed)

    def trace(self) -> dict | None:
        """The trace to keep with the result, or None when the call read nothing recorded."""
        trace = {kind: kept for kind in _KINDS if (kept := getattr(self, kind))}
        if self.cwd is not None and trace:
            trace["cwd"] = self.cwd
        return trace or None


_KINDS = ("files", "dirs", "env", "stats", "lstats")


def _reads(flags: int) -> bool:
    """Whether an open with these flags may read what the file held: read-only, or read and
    write without truncating or creating it (``"r+"``)."""
    mode = flags & _ACCMODE
    return mode == os.O_RDONLY or (mode == os.O_RDWR and not flags & (os.O_TRUNC | os.O_CREAT))


def start() -> Recorder:
    """Begin recording the inputs of a call run by this thread (end it with :func:`stop`)."""
    if not hooks.installed:
        hooks.install()
    rec = hooks.local.rec = Recorder(getattr(hooks.local, "rec", None), sys._getframe(1))
    return rec


def stop(rec: Recorder, reach=None) -> dict | None:
    """End a recording: its trace (None if the call read nothing), also merged into the
    recording of the call that made this one, if any. ``reach``: the function that ran (a
    pure function or a plain one), whose code's inputs read behind a memo are added
    (:mod:`.memos`)."""
    hooks.local.rec = rec.parent
    if reach is not None and remembered:
        add_unseen(rec.add, rec.sites, codes_of(reach))
    trace = rec.trace()
    parent = rec.parent
    if parent is not None:
        if trace is not None:
            parent.merge(trace)
        parent.sites |= rec.sites
    return trace



def note(trace: dict) -> None:
    """A result with this trace is being answered to this thread: a call recording here
    depends on the same inputs."""
    rec = getattr(hooks.local, "rec", None)
    if rec is not None:
        rec.merge(trace)


# ---------------------------------------------------------------------- checking

_parsed: dict[bytes, dict] = {}


def holds_raw(raw: bytes) -> bool:
    """:func:`holds` for a trace as the store keeps it (parsed once per process)."""
    trace = _parsed.get(raw)
    if trace is None:
        try:
            trace = json.loads(raw)
        except ValueError:
            return False  # unreadable: the result is computed again
        if len(_parsed) >= _CACHE_KEPT:
            _parsed.clear()
        _parsed[raw] = trace
    return holds(trace)


def holds(trace: dict | None) -> bool:
    """Whether every input a trace recorded is still as it was, here; a call recording on this
    thread then depends on them too."""
    if not trace:
        return True
    if not isinstance(trace, dict) or not trace_holds(trace):
        return False
    note(trace)
    return True
