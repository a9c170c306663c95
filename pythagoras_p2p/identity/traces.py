"""What a verifying trace keeps of a file, a directory or a variable, and whether it still holds.

Recording (which reads are inputs, on which thread) is :mod:`.inputs`; this module only states
and checks. A file is kept as ``[blake3 of its content, size, mtime_ns, ino, dev, ctime_ns]``,
a directory as ``[blake3 of its sorted entry names, entries, mtime_ns, ino, dev, ctime_ns]``,
an absent one as None. A check of an unchanged one is a ``stat``: the content (or the listing)
is hashed again only when a stat field moved, so the same bytes written again still hold.
A path whose stat the call asked for (``os.path.exists``, ``getsize``, ``Path.is_file``) is kept
as ``[file type, size, mtime_ns]`` from the very stat the call got (a directory as its type
alone: what it holds is its listing, recorded when it is listed), None when it is absent; it
holds while a new stat gives the same. The working directory, when the call used a relative
path, is kept as itself.

Stat fields are trusted only for what was older than :data:`RACY_NS` (by its ctime) when it was
hashed, as git does with its index: a file rewritten within the same clock tick as it was hashed
keeps its size and times. Such a state keeps 0 in place of its stat fields, and is hashed at
each check (once per process while it stays unchanged: see ``_digests``).
"""

from __future__ import annotations

import json
import os
import stat as stat_module
import time

from blake3 import blake3

__all__ = ["RACY_NS", "file_state", "dir_state", "stat_state", "stat_of", "trace_holds",
           "changed", "encode_trace", "getenv_unrecorded", "STAT", "LSTAT"]

#: A file whose ctime is this recent when it is seen may still change within the same tick.
RACY_NS = 2_000_000_000
_BIG = 8 << 20  # files from this size on are hashed through a map, on every core
_CACHE_KEPT = 4096
_S_ISREG = stat_module.S_ISREG
_S_ISDIR = stat_module.S_ISDIR
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_GETITEM = os._Environ.__getitem__  # as it is before inputs.py wraps it
# os.stat and os.lstat as they are before inputs.py wraps them: the checks here use them
STAT = os.stat
LSTAT = os.lstat
_MISSING_ERRORS = (FileNotFoundError, NotADirectoryError)


def getenv_unrecorded(name: str) -> str | None:
    """``os.environ.get(name)``, not recorded as a read of the running call."""
    try:
        return _GETITEM(os.environ, name)
    except KeyError:
        return None


# path → (stat key, hex digest): what this process hashed, reused while the stat is the same
# and was not racy when it was hashed.
_digests: dict[str, tuple[tuple, str]] = {}


def _stat_key(st: os.stat_result, size: int | None = None) -> tuple:
    return (st.st_size if size is None else size, st.st_mtime_ns, st.st_ino, st.st_dev,
            st.st_ctime_ns)


def _racy(st: os.stat_result) -> bool:
    return st.st_ctime_ns >= time.time_ns() - RACY_NS


def _hash_file(path: str, size: int, fd: int | None = None) -> str:
    if size >= _BIG:
        return blake3(max_threads=blake3.AUTO).update_mmap(path).hexdigest()
    hasher = blake3()
    own = fd is None
    if fd is None:
        fd = os.open(path, _READ_FLAGS)
    try:
        while chunk := os.read(fd, max(size + 1, 1 << 16)):
            hasher.update(chunk)
    finally:
        if own:
            os.close(fd)
    return hasher.hexdigest()


def _listing(path: str) -> tuple[str, int]:
    names = sorted(os.listdir(path))
    return blake3("\0".join(names).encode("utf-8", "surrogateescape")).hexdigest(), len(names)


def _cached(path: str, st: os.stat_result, make) -> str:
    key = _stat_key(st, 0 if _S_ISDIR(st.st_mode) else None)
    cached = _digests.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    digest = make()
    if not _racy(st):
        if len(_digests) >= _CACHE_KEPT:
            _digests.clear()
        _digests[path] = (key, digest)
    return digest


def _kept(digest: str, size: int, st: os.stat_result) -> list:
    if _racy(st):
        return [digest, size, 0, 0, 0, 0]
    return [digest, *_stat_key(st, size)]


def file_state(path: str) -> list | None | bool:
    """What a trace keeps of a file (see the module docstring): None when it is absent, False
    when it is not a regular file (a directory, a pipe: not recorded) or cannot be read. A file
    this process hashed already, unchanged since, costs one ``stat``."""
    try:
        st = STAT(path)
    except FileNotFoundError:
        return None
    except OSError:
        return False  # unreadable: the call's own open fails as well
    if not _S_ISREG(st.st_mode):
        return False
    cached = _digests.get(path)
    if cached is not None and cached[0] == _stat_key(st):
        return _kept(cached[1], st.st_size, st)
    try:
        fd = os.open(path, _READ_FLAGS)  # non-blocking: a file replaced by a pipe must not wait
    except OSError:
        return False
    try:
        st = os.fstat(fd)  # the stat of the bytes hashed, should the file have just changed
        if not _S_ISREG(st.st_mode):
            return False
        digest = _cached(path, st, lambda: _hash_file(path, st.st_size, fd))
    except OSError:
        return False
    finally:
        os.close(fd)
    return _kept(digest, st.st_size, st)


def dir_state(path: str) -> list | None | bool:
    """What a trace keeps of a directory listed: None when it is absent, False when it is not a
    directory or cannot be listed."""
    try:
        st = STAT(path)
        if not _S_ISDIR(st.st_mode):
            return False
        digest, count = _listing(path)
    except FileNotFoundError:
        return None
    except OSError:
        return False
    return _kept(digest, count, st)


def stat_of(st: os.stat_result) -> list:
    """What a trace keeps of a stat the call got (see the module docstring)."""
    kind = stat_module.S_IFMT(st.st_mode)
    if _S_ISDIR(st.st_mode):
        return [kind, 0, 0]
    return [kind, st.st_size, st.st_mtime_ns]


def stat_state(path: str, follow: bool = True) -> list | None | bool:
    """A path's stat as a trace keeps it: None when it is absent, False when it cannot be
    stat'ed (a permission error: not recorded, and never holding)."""
    try:
        return stat_of(STAT(path) if follow else LSTAT(path))
    except _MISSING_ERRORS:
        return None
    except (OSError, ValueError):
        return False


def _holds(path: str, recorded: list | None, directory: bool) -> bool:
    try:
        st = STAT(path)
    except FileNotFoundError:
        return recorded is None
    except OSError:
        return False
    if recorded is None or not (_S_ISDIR if directory else _S_ISREG)(st.st_mode):
        return False
    mtime = recorded[2]
    if (mtime and mtime == st.st_mtime_ns and recorded[5] == st.st_ctime_ns
            and recorded[3] == st.st_ino and recorded[4] == st.st_dev
            and (directory or recorded[1] == st.st_size)):
        return True  # the stat fast path: unchanged since it was hashed
    try:
        if directory:
            return _cached(path, st, lambda: _listing(path)[0]) == recorded[0]
        if st.st_size != recorded[1]:
            return False
        return _cached(path, st, lambda: _hash_file(path, st.st_size)) == recorded[0]
    except OSError:
        return False


def trace_holds(trace: dict) -> bool:
    """Whether every input a trace recorded is still as it was, here (a malformed trace, from a
    peer, never holds)."""
    try:
        for path, recorded in trace.get("files", {}).items():
            if not _holds(path, recorded, False):
                return False
        for path, recorded in trace.get("dirs", {}).items():
            if not _holds(path, recorded, True):
                return False
        for kind, follow in (("stats", True), ("lstats", False)):
            for path, recorded in trace.get(kind, {}).items():
                if stat_state(path, follow) != recorded:
                    return False
        for name, value in trace.get("env", {}).items():
            if getenv_unrecorded(name) != value:
                return False
        cwd = trace.get("cwd")
        if cwd is not None and _getcwd() != cwd:
            return False
    except (AttributeError, TypeError, IndexError, ValueError):
        return False
    return True


def changed(trace: dict | None) -> list[str]:
    """What of a trace no longer holds here, said for people (``f.lookup``, ``f.explain``)."""
    found: list[str] = []
    if not trace:
        return found
    try:
        for kind, directory in (("files", False), ("dirs", True)):
            what = "directory" if directory else "file"
            for path, recorded in trace.get(kind, {}).items():
                if not _holds(path, recorded, directory):
                    found.append(f"{what} {path} " + (
                        "appeared" if recorded is None else
                        "changed" if os.path.exists(path) else "is gone"))
        for kind, follow in (("stats", True), ("lstats", False)):
            for path, recorded in trace.get(kind, {}).items():
                now = stat_state(path, follow)
                if now != recorded:
                    found.append(f"path {path} " + (
                        "appeared" if recorded is None else "is gone" if now is None
                        else "changed (its type, size or modification time)"))
        cwd = trace.get("cwd")
        if cwd is not None and _getcwd() != cwd:
            found.append(f"the working directory is no longer {cwd} (the call used relative paths)")
        for name, value in trace.get("env", {}).items():
            env_now = getenv_unrecorded(name)
            if env_now != value:
                found.append(f"environment variable {name} " + (
                    "was set" if value is None else "was unset" if env_now is None else "changed"))
    except (AttributeError, TypeError, IndexError, ValueError):
        found.append("the recorded inputs are unreadable")
    return found


def _getcwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # it was removed
        return None


def encode_trace(trace: dict) -> bytes:
    """A trace as the store's ``traced`` table keeps it (compact JSON)."""
    return json.dumps(trace, separators=(",", ":")).encode()
