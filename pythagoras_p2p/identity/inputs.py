"""Verifying traces: the files, directories and environment variables a call read, checked before a hit.

A call's address covers its code and its arguments, not what it reads at run time: a function
that calls ``pd.read_csv(path)`` or ``os.environ.get("MODE")`` would get its old result after
the file or the variable changed. So while a call runs, the thread that runs it records:

* every file it opens for reading (the ``open`` audit event of ``open``, ``io.open``,
  ``os.open``, ``pathlib``): path → blake3 of its content, taken when it is opened, with its
  stat fields — a check of an unchanged file is then one ``stat``. A file absent when opened is
  recorded as absent (the call may have caught the error);
* every directory it lists (``os.listdir``, ``os.scandir``: ``glob``, ``os.walk``,
  ``Path.iterdir``): path → blake3 of its sorted entry names, so a file added to a folder the
  call processes is seen;
* every environment variable it reads through ``os.environ`` (``[]``, ``get``, ``in``,
  ``os.getenv``): name → value, or absent.

The states and their checks are :mod:`.traces`. The trace is kept with the result (its
metadata, key ``inputs``; only results that read something have one), and a hit is answered only
while every recorded input still holds on the machine that asks; otherwise the call is computed
again and its new result replaces the old.

Not recorded: what lies under the interpreter's prefixes and the standard library, Python
sources and extensions under ``sys.path`` (the fingerprint covers the user's code) and the
import system's listings, ``/proc``, ``/sys``, ``/dev``, the store's own home, files and
directories the call itself made or opened for writing first, variables named ``PYTHAGORAS_*``
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
import sysconfig
import threading
import weakref

from blake3 import blake3

from .traces import RACY_NS, changed, dir_state, encode_trace, file_state, trace_holds

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
_LISTINGS = ("os.listdir", "os.scandir")


def _import_listing_code():
    """The code of the import system's directory listing (``FileFinder._fill_cache``)."""
    external = sys.modules.get("_frozen_importlib_external")
    finder = getattr(external, "FileFinder", None)
    return getattr(getattr(finder, "_fill_cache", None), "__code__", None)


_IMPORT_LISTING = _import_listing_code()

_local = threading.local()
_installed = False
_install_lock = threading.Lock()


def _fixed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots |= {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
              os.path.dirname(os.__file__)}
    found = {os.path.join(os.path.realpath(r), "") for r in roots if r}
    found |= {os.path.join(r, "") for r in roots if r}
    found.discard(os.sep)  # an interpreter installed at the root leaves the rest to record
    return tuple(sorted(found)) + ("/proc/", "/sys/", "/dev/")


_roots: tuple[str, ...] = _fixed_roots()


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

    __slots__ = ("files", "dirs", "env", "written", "parent")

    def __init__(self, parent: Recorder | None):
        self.files: dict[str, list | None] = {}
        self.dirs: dict[str, list | None] = {}
        self.env: dict[str, str | None] = {}
        self.written: set[str] = set()  # made or opened for writing by the call: its own output
        self.parent = parent

    def _path(self, path) -> str | None:
        """The absolute path of an event's argument, or None when it is not to be recorded."""
        if type(path) is int or getattr(_local, "busy", False):  # its own hashing or listing
            return None
        if path is None:
            path = "."
        elif type(path) is not str:
            try:
                path = os.fsdecode(path)
            except TypeError:
                return None
        path = os.path.abspath(path)
        if path in self.written or path.startswith(_roots) or _is_source(path):
            return None
        return path

    def opened(self, path, flags) -> None:
        path = self._path(path)
        if path is None or path in self.files:
            return
        if type(flags) is int and flags & _ACCMODE != os.O_RDONLY:
            self.written.add(path)
            return
        self._keep(self.files, path, file_state)

    def listed(self, path) -> None:
        path = self._path(path)
        if path is not None and path not in self.dirs:
            self._keep(self.dirs, path, dir_state)

    def made(self, path) -> None:
        path = self._path(path)
        if path is not None:
            self.written.add(path)

    def _keep(self, kept: dict, path: str, state_of) -> None:
        _local.busy = True
        try:
            state = state_of(path)
        finally:
            _local.busy = False
        if state is not False:
            kept[path] = state

    def read_env(self, name, value) -> None:
        if (type(name) is str and name not in self.env and name not in _ENV_IGNORED
                and not name.startswith(_ENV_PREFIX_IGNORED)):
            self.env[name] = value

    def merge(self, trace: dict) -> None:
        """Add the inputs of a nested call (computed here, or answered from the store)."""
        for kind, kept in (("files", self.files), ("dirs", self.dirs), ("env", self.env)):
            for key, state in trace.get(kind, {}).items():
                kept.setdefault(key, state)

    def trace(self) -> dict | None:
        """The trace to keep with the result, or None when the call read nothing recorded."""
        trace = {kind: kept for kind, kept in
                 (("files", self.files), ("dirs", self.dirs), ("env", self.env)) if kept}
        return trace or None


# Threads started while a call records (a ThreadPoolExecutor inside it) → that recording: what
# they read counts for the call. A thread made before the call (a pool kept from an earlier
# call) records nothing.
_inherited: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ORIGINAL_THREAD_INIT = threading.Thread.__init__


def _thread_init(self, *args, **kwargs):
    _ORIGINAL_THREAD_INIT(self, *args, **kwargs)
    rec = getattr(_local, "rec", None)
    if rec is not None:
        _inherited[self] = rec


def _recorder() -> Recorder | None:
    """The recording of the call this thread runs (or was started by), if any."""
    rec = getattr(_local, "rec", None)
    if rec is None and _inherited:
        rec = _inherited.get(threading.current_thread())
    return rec


def _audit(event: str, args: tuple) -> None:
    if event == "open":
        rec = _recorder()
        if rec is not None:
            rec.opened(args[0], args[2])
    elif event in _LISTINGS:
        rec = _recorder()
        if rec is not None and sys._getframe(1).f_code is not _IMPORT_LISTING:
            rec.listed(args[0])
    elif event == "os.mkdir":
        rec = _recorder()
        if rec is not None:
            rec.made(args[0])


def _recording_getitem(self, key, _original=os._Environ.__getitem__):
    rec = getattr(_local, "rec", None)
    if rec is None and _inherited:
        rec = _inherited.get(threading.current_thread())
    if rec is None or self is not os.environ:
        return _original(self, key)
    try:
        value = _original(self, key)
    except KeyError:
        rec.read_env(key, None)
        raise
    rec.read_env(key, value)
    return value


def _install() -> None:
    """Hook file opens and environment reads, once per process, at the first recording: a
    process that never records pays nothing."""
    global _installed
    with _install_lock:
        if not _installed:
            sys.addaudithook(_audit)
            os._Environ.__getitem__ = _recording_getitem  # get, in, getenv go through it
            threading.Thread.__init__ = _thread_init
            _installed = True


def start() -> Recorder:
    """Begin recording the inputs of a call run by this thread (end it with :func:`stop`)."""
    if not _installed:
        _install()
    rec = _local.rec = Recorder(getattr(_local, "rec", None))
    return rec


def stop(rec: Recorder) -> dict | None:
    """End a recording: its trace (None if the call read nothing), also merged into the
    recording of the call that made this one, if any."""
    _local.rec = rec.parent
    trace = rec.trace()
    if trace is not None and rec.parent is not None:
        rec.parent.merge(trace)
    return trace


def note(trace: dict) -> None:
    """A result with this trace is being answered to this thread: a call recording here
    depends on the same inputs."""
    rec = getattr(_local, "rec", None)
    if rec is not None:
        rec.merge(trace)


class Untracked:
    """A function whose calls record nothing (``add_pure_function(track_inputs=False)``), as a
    worker loads it from the function's record."""

    __slots__ = ("func", "__qualname__")

    def __init__(self, func):
        self.func = func
        self.__qualname__ = func.__qualname__

    def __call__(self, **kwargs):
        return self.func(**kwargs)


def untracked(func) -> Untracked:
    return func if type(func) is Untracked else Untracked(func)


def untracked_fingerprint(fp: bytes) -> bytes:
    """The fingerprint of a function whose inputs are not tracked, made from its own: its
    results (which keep no trace) are never answered for the tracked function, nor the other
    way round."""
    return blake3(b"pythagoras-untracked-1\0" + fp).digest()


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
