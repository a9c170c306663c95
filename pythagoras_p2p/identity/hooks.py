"""The hooks that see what a running call reads, installed once per process at the first
recording (:func:`install`; a process that never records pays nothing): the ``open``,
listing and making audit events, ``os.environ``'s and ``os.environb``'s reads, ``os.stat`` and
``os.lstat`` (replaced), and ``threading.Thread.__init__`` (a thread started by a call records
into its trace). Each hands what it saw to the recording of the call this thread runs
(:class:`.inputs.Recorder`, kept in :data:`local`); what counts is :mod:`.inputs`'s.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import threading
import weakref
from typing import Any

from . import traces
from .memos import OWN_CODE

__all__ = ["FIXED", "install", "local", "recorder"]

_LISTINGS = ("os.listdir", "os.scandir")
_MAKING = ("os.mkdir", "os.remove", "os.rmdir", "os.rename")


def _import_listing_code():
    """The code of the import system's directory listing (``FileFinder._fill_cache``)."""
    external = sys.modules.get("_frozen_importlib_external")
    finder = getattr(external, "FileFinder", None)
    return getattr(getattr(finder, "_fill_cache", None), "__code__", None)


_IMPORT_LISTING = _import_listing_code()

local = threading.local()
installed = False
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


FIXED: tuple[str, ...] = _fixed_roots()  # where no code of the user's lies


# Threads started while a call records (a ThreadPoolExecutor inside it) → that recording: what
# they read counts for the call. A thread made before the call (a pool kept from an earlier
# call) records nothing.
_inherited: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ORIGINAL_THREAD_INIT = threading.Thread.__init__


def _thread_init(self, *args, **kwargs):
    _ORIGINAL_THREAD_INIT(self, *args, **kwargs)
    rec = getattr(local, "rec", None)
    if rec is not None:
        _inherited[self] = rec


def recorder() -> Any:  # an inputs.Recorder, or None
    """The recording of the call this thread runs (or was started by), if any."""
    rec = getattr(local, "rec", None)
    if rec is None and _inherited:
        rec = _inherited.get(threading.current_thread())
    return rec


def _by_own_code(frame) -> bool:
    """Whether the first frame from ``frame`` up that is not the standard library's (nor the
    import system's) is this package's: its own reads (a module it imports lazily, a path it
    resolves) are not the call's inputs."""
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(OWN_CODE):
            return True
        if not (name.startswith(FIXED) or name.startswith("<frozen")):
            return False
        frame = frame.f_back
    return False


def _audit(event: str, args: tuple) -> None:
    if event == "open":
        rec = recorder()
        if rec is not None and not _by_own_code(sys._getframe(1)):
            rec.opened(args[0], args[2])
    elif event in _LISTINGS:
        rec = recorder()
        if (rec is not None and sys._getframe(1).f_code is not _IMPORT_LISTING
                and not _by_own_code(sys._getframe(1))):
            rec.listed(args[0])
    elif event in _MAKING:  # made, removed, renamed by the call: its own output
        rec = recorder()
        if rec is not None:
            rec.made(args[0])
            if event == "os.rename":
                rec.made(args[1])


def _recording_getitem(self, key, _original=os._Environ.__getitem__):
    rec = getattr(local, "rec", None)
    if rec is None and _inherited:
        rec = _inherited.get(threading.current_thread())
    if rec is None or (self is not os.environ and self is not _ENVIRONB):
        return _original(self, key)
    try:
        value = _original(self, key)
    except KeyError:
        rec.read_env(key, None)
        raise
    rec.read_env(key, value)
    return value


_ENVIRONB = getattr(os, "environb", None)
_STAT, _LSTAT = traces.STAT, traces.LSTAT  # the originals
_MISSING = (FileNotFoundError, NotADirectoryError)


def _recording_stat(path, *, dir_fd=None, follow_symlinks=True):
    """``os.stat``, recording the stat a call got (``os.path.exists``, ``getsize``, ``isfile``
    and ``Path.is_file`` call it through the module's attribute); the import system and the
    checks in :mod:`.traces` keep the original."""
    rec = recorder()
    if rec is None or dir_fd is not None or _by_own_code(sys._getframe(1)):
        return _STAT(path, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
    return _stat_recorded(rec, _STAT, path, follow_symlinks, follow_symlinks=follow_symlinks)


def _recording_lstat(path, *, dir_fd=None):
    """``os.lstat`` (``os.path.islink``, ``lexists``), recording like :func:`_recording_stat`."""
    rec = recorder()
    if rec is None or dir_fd is not None or _by_own_code(sys._getframe(1)):
        return _LSTAT(path, dir_fd=dir_fd)
    return _stat_recorded(rec, _LSTAT, path, False)


def _stat_recorded(rec: Any, original, path, follow: bool, **kwargs):
    try:
        st = original(path, **kwargs)
    except _MISSING:
        rec.statted(path, None, follow)
        raise
    rec.statted(path, st, follow)
    return st


def install() -> None:
    """Hook file opens and environment reads, once per process, at the first recording: a
    process that never records pays nothing."""
    global installed
    with _install_lock:
        if not installed:
            sys.addaudithook(_audit)
            # get, in, getenv go through it; patched on purpose, as the audit hook cannot see it
            os._Environ.__getitem__ = _recording_getitem  # type: ignore[method-assign]
            if os.stat is _STAT:
                os.stat = _recording_stat
            if os.lstat is _LSTAT:
                os.lstat = _recording_lstat
            for supported in (os.supports_dir_fd, os.supports_fd, os.supports_follow_symlinks):
                for original, wrapper in ((_STAT, _recording_stat), (_LSTAT, _recording_lstat)):
                    if original in supported:  # shutil.rmtree asks before using dir_fd
                        supported.add(wrapper)
            # a thread a call starts records into the call's trace: patched on purpose
            threading.Thread.__init__ = _thread_init  # type: ignore[method-assign]
            installed = True
