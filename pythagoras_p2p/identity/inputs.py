"""Verifying traces: the files and environment variables a call read, checked before a hit.

A call's address covers its code and its arguments, not what it reads at run time: a function
that calls ``pd.read_csv(path)`` or ``os.environ.get("MODE")`` would get its old result after
the file or the variable changed. So while a call runs, the thread that runs it records:

* every file it opens for reading (the ``open`` audit event of ``open``, ``io.open``,
  ``os.open``, ``pathlib``): path → blake3 of its content, taken when it is opened, with its
  size, mtime, inode, device and ctime — a check of an unchanged file is then one ``stat``. A
  file absent when opened is recorded as absent (the call may have caught the error);
* every environment variable it reads through ``os.environ`` (``[]``, ``get``, ``in``,
  ``os.getenv``): name → value, or absent.

The trace is kept with the result (its metadata, key ``inputs``; only results that read
something have one), and a hit is answered only while every recorded input still holds on the
machine that asks; otherwise the call is computed again and its new result replaces the old.

Not recorded: files under the interpreter's prefixes and the standard library, Python sources
and extensions under ``sys.path`` (the fingerprint covers the user's code), ``/proc``, ``/sys``,
``/dev``, the store's own home, files the call itself opened for writing first, variables named
``PYTHAGORAS_*`` and those the worker pool sets (``CUDA_VISIBLE_DEVICES``, thread counts);
reads by threads or processes the call starts, by C code that opens files itself (not through
Python's ``open``), and directory listings. A function may opt out
(``add_pure_function(track_inputs=False)``): nothing is recorded for it.

Stat times are trusted only for a file whose ctime is older than :data:`RACY_NS` when it is
seen (as git does with its index): a file rewritten within the same clock tick as it was hashed
keeps its size and times, so such a file is hashed again when checked.
"""

from __future__ import annotations

import json
import os
import stat as stat_module
import sys
import sysconfig
import threading
import time

from blake3 import blake3

__all__ = ["Recorder", "start", "stop", "holds", "holds_raw", "changed", "note", "exclude_root",
           "encode_trace", "untracked", "untracked_fingerprint", "Untracked"]

#: A file whose ctime is this recent when it is seen may still change within the same tick.
RACY_NS = 2_000_000_000
_BIG = 8 << 20  # files from this size on are hashed through a map, on every core
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
_S_ISREG = stat_module.S_ISREG
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)

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


# ---------------------------------------------------------------------- file states

# path → (stat key, hex digest): files hashed by this process, reused while their stat is the
# same and was not racy when they were hashed.
_digests: dict[str, tuple[tuple, str]] = {}


def _stat_key(st: os.stat_result) -> tuple:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_ctime_ns)


def _racy(st: os.stat_result) -> bool:
    return st.st_ctime_ns >= time.time_ns() - RACY_NS


def _hash_file(path: str, size: int, fd: int | None = None) -> str:
    if size >= _BIG:
        return blake3(max_threads=blake3.AUTO).update_mmap(path).hexdigest()
    hasher = blake3()
    own = fd is None
    if own:
        fd = os.open(path, _READ_FLAGS)
    try:
        while chunk := os.read(fd, max(size + 1, 1 << 16)):
            hasher.update(chunk)
    finally:
        if own:
            os.close(fd)
    return hasher.hexdigest()


def _digest(path: str, st: os.stat_result, fd: int | None = None) -> str:
    """The content hash of a regular file, from this process's cache while its stat holds."""
    key = _stat_key(st)
    cached = _digests.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    digest = _hash_file(path, st.st_size, fd)
    if not _racy(st):
        if len(_digests) >= _CACHE_KEPT:
            _digests.clear()
        _digests[path] = (key, digest)
    return digest


def _file_state(path: str) -> list | None | bool:
    """What a trace keeps of a file: ``[digest, size, mtime_ns, ino, dev, ctime_ns]`` (the
    stat fields 0 when they are not to be trusted), None when it is absent, False when it is not
    a regular file (a directory, a pipe: not recorded) or cannot be read."""
    try:
        fd = os.open(path, _READ_FLAGS)  # non-blocking: opening a pipe must not wait
    except FileNotFoundError:
        return None
    except OSError:
        return False  # unreadable: the call's own open fails as well
    try:
        st = os.fstat(fd)
        if not _S_ISREG(st.st_mode):
            return False
        digest = _digest(path, st, fd)
    except OSError:
        return False
    finally:
        os.close(fd)
    if _racy(st):
        return [digest, st.st_size, 0, 0, 0, 0]
    return [digest, *_stat_key(st)]


def _file_holds(path: str, recorded: list | None) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return recorded is None
    except OSError:
        return False
    if recorded is None or not _S_ISREG(st.st_mode):
        return False
    mtime = recorded[2]
    if (mtime and mtime == st.st_mtime_ns and recorded[5] == st.st_ctime_ns
            and recorded[3] == st.st_ino and recorded[1] == st.st_size and recorded[4] == st.st_dev):
        return True  # the stat fast path: unchanged since it was hashed
    if st.st_size != recorded[1]:
        return False
    try:
        return _digest(path, st) == recorded[0]
    except OSError:
        return False


# ---------------------------------------------------------------------- recording


class Recorder:
    """The inputs one call read so far (see the module docstring); one per running call and
    thread, nested calls merging theirs into their caller's."""

    __slots__ = ("files", "env", "written", "parent", "busy")

    def __init__(self, parent: Recorder | None):
        self.files: dict[str, list | None] = {}
        self.env: dict[str, str | None] = {}
        self.written: set[str] = set()
        self.parent = parent
        self.busy = False  # hashing: the opens it makes are its own

    def opened(self, path, flags) -> None:
        if type(path) is int or self.busy:
            return
        if type(path) is not str:
            try:
                path = os.fsdecode(path)
            except TypeError:
                return
        path = os.path.abspath(path)
        if path in self.files or path in self.written or path.startswith(_roots) or _is_source(path):
            return
        if type(flags) is int and flags & _ACCMODE != os.O_RDONLY:
            self.written.add(path)
            return
        self.busy = True
        try:
            state = _file_state(path)
        finally:
            self.busy = False
        if state is not False:
            self.files[path] = state

    def read_env(self, name, value) -> None:
        if (type(name) is str and name not in self.env and name not in _ENV_IGNORED
                and not name.startswith(_ENV_PREFIX_IGNORED)):
            self.env[name] = value

    def merge(self, trace: dict) -> None:
        """Add the inputs of a nested call (computed here, or answered from the store)."""
        for path, state in trace.get("files", {}).items():
            self.files.setdefault(path, state)
        for name, value in trace.get("env", {}).items():
            self.env.setdefault(name, value)

    def trace(self) -> dict | None:
        """The trace to keep with the result, or None when the call read nothing recorded."""
        if not self.files and not self.env:
            return None
        trace: dict = {}
        if self.files:
            trace["files"] = self.files
        if self.env:
            trace["env"] = self.env
        return trace


def _audit(event: str, args: tuple) -> None:
    if event == "open":
        rec = getattr(_local, "rec", None)
        if rec is not None:
            rec.opened(args[0], args[2])


_ORIGINAL_GETITEM = os._Environ.__getitem__


def _recording_getitem(self, key):
    rec = getattr(_local, "rec", None)
    if rec is None or self is not os.environ:
        return _ORIGINAL_GETITEM(self, key)
    try:
        value = _ORIGINAL_GETITEM(self, key)
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


def encode_trace(trace: dict) -> bytes:
    """A trace as the store's ``traced`` table keeps it (compact JSON)."""
    return json.dumps(trace, separators=(",", ":")).encode()


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


def changed(trace: dict | None) -> list[str]:
    """What of a trace no longer holds here, said for people (``f.lookup``, ``f.explain``)."""
    found = []
    if not trace:
        return found
    try:
        for path, recorded in trace.get("files", {}).items():
            if not _file_holds(path, recorded):
                found.append(f"file {path} " + ("appeared" if recorded is None else
                                                "changed" if os.path.exists(path) else "is gone"))
        for name, value in trace.get("env", {}).items():
            try:
                now = _ORIGINAL_GETITEM(os.environ, name)
            except KeyError:
                now = None
            if now != value:
                found.append(f"environment variable {name} " + (
                    "was set" if value is None else "was unset" if now is None else "changed"))
    except (AttributeError, TypeError, IndexError, ValueError):
        found.append("the recorded inputs are unreadable")
    return found


def holds(trace: dict | None) -> bool:
    """Whether every input a trace recorded is still as it was, here; a call recording on this
    thread then depends on them too."""
    if not trace:
        return True
    try:
        for path, recorded in trace.get("files", {}).items():
            if not _file_holds(path, recorded):
                return False
        environ = os.environ
        for name, value in trace.get("env", {}).items():
            try:
                found = _ORIGINAL_GETITEM(environ, name)
            except KeyError:
                found = None
            if found != value:
                return False
    except (AttributeError, TypeError, IndexError, ValueError):
        return False  # a malformed trace (from a peer): never trusted
    note(trace)
    return True
