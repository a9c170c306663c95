"""The user's modules a function record was made with, and keeping a worker's in step with them.

A worker process lives long: a node's workers serve every caller of the swarm, a pool's serve
every call of a session. A user module it imported once (a helper reached by reference, or
``import mylib`` inside a function body) would stay in its ``sys.modules`` after the caller
edited the file and reloaded it (``importlib.reload``, a notebook's autoreload): the worker would
run the old helper under the new fingerprint. So:

* a record lists the user modules the caller has loaded, each with the hash of the source file
  it was loaded from (:func:`caller_modules`: taken when the process first saw that load of the
  module; a stat fast path keeps this cheap). A changed helper therefore also
  changes the record's key, even if its fingerprint missed the change;
* a worker knows the hash of the file each user module it holds was loaded from
  (:class:`ModuleVersions`). Before it runs a record other than the one it ran last, it puts the
  versions the record lists in place: a module it holds in another version is replaced by the
  one it kept of that version, or evicted from ``sys.modules`` so that the next import reads the
  file again. Before it loads a new record, a module whose file changed since it was loaded is
  evicted as well.

Only the user's own modules (:func:`~pythagoras_p2p.identity.usercode.is_user_code`) with a
source file are tracked; installed packages are named by version in fingerprints.
"""

from __future__ import annotations

import importlib
import os
import sys
import types

from blake3 import blake3

from ..errors import PythagorasError
from ..identity.usercode import is_user_code
from .context import in_worker

__all__ = ["caller_modules", "ModuleVersions", "source_hash"]

# path -> ((mtime_ns, size, inode), hash): a file is read again only when its stat changes
_HASHES: dict[str, tuple[tuple, bytes]] = {}


def _stat(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def source_hash(path: str, stat: tuple | None = None) -> bytes | None:
    """The blake3 hash of a source file (16 bytes), or None if it cannot be read."""
    stat = _stat(path) if stat is None else stat
    if stat is None:
        return None
    known = _HASHES.get(path)
    if known is not None and known[0] == stat:
        return known[1]
    try:
        with open(path, "rb") as fh:
            digest = blake3(fh.read()).digest(16)
    except OSError:
        return None
    _HASHES[path] = (stat, digest)
    return digest


def _source_file(module: object) -> str | None:
    path = getattr(module, "__file__", None)
    return path if isinstance(path, str) and path.endswith(".py") else None


def _user_module_file(name: str, module: object) -> str | None:
    """The source file of a user module worth tracking, or None."""
    if name == "__main__" or not isinstance(module, types.ModuleType):
        return None
    path = _source_file(module)
    if path is None or not is_user_code(name):
        return None
    return path


# module name -> (its __spec__ when it was first seen, the hash of its file then)
_SEEN: dict[str, tuple[object, bytes]] = {}


def loaded_hash(name: str, module: types.ModuleType, path: str,
                stat: tuple | None = None) -> bytes | None:
    """The hash of the file ``module`` was loaded from, as far as this process can tell: taken
    when it first saw this load of the module (an import or ``importlib.reload`` gives the
    module a new ``__spec__``), so a file edited since without a reload still counts as the
    version in memory."""
    spec = getattr(module, "__spec__", None)
    seen = _SEEN.get(name)
    if seen is not None and spec is not None and seen[0] is spec:
        return seen[1]
    digest = source_hash(path, stat)
    if digest is not None and spec is not None:
        _SEEN[name] = (spec, digest)
    return digest


def caller_modules() -> dict[str, bytes]:
    """The user modules loaded in this process, by name, each with the hash of the file it was
    loaded from (see :func:`loaded_hash`)."""
    found = {}
    for name, module in list(sys.modules.items()):
        path = _user_module_file(name, module)
        if path is not None:
            digest = loaded_hash(name, module, path)
            if digest is not None:
                found[name] = digest
    return dict(sorted(found.items()))


class ModuleVersions:
    """The versions of the user modules a worker process holds (see the module docstring)."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[str, tuple | None, bytes]] = {}  # name -> (path, stat, hash)
        self.kept: dict[tuple[str, bytes], types.ModuleType] = {}  # (name, hash) -> module
        self.others: set[str] = set()  # modules seen that are not tracked
        self.count = 0  # len(sys.modules) when it was last looked at
        self.caller = False  # set when this process makes a record (see align)

    def observe(self) -> None:
        """Note the user modules imported since the last look (cheap when none were)."""
        modules = sys.modules
        if len(modules) == self.count:
            return
        for name, module in list(modules.items()):
            if name in self.held or name in self.others:
                continue
            path = _user_module_file(name, module)
            stat = None if path is None else _stat(path)
            digest = None if path is None or stat is None else loaded_hash(name, module, path, stat)
            if path is None or digest is None:
                self.others.add(name)
                continue
            self.held[name] = (path, stat, digest)
            self.kept[name, digest] = module
        self.count = len(modules)

    def align(self, wanted: dict[str, bytes], *, check_files: bool) -> None:
        """Put the module versions ``wanted`` (name -> hash, as a record lists them) in place;
        with ``check_files``, also evict every held module whose file changed since.

        Nothing is done in a process that made records itself (a caller: a Dask worker thread
        of the caller's process, say): its modules are the user's, and already the ones its
        records list. A worker process running nested calls is still a worker.
        """
        if self.caller and not in_worker():
            return
        self.observe()
        for name, (path, stat, digest) in list(self.held.items()):
            want = wanted.get(name)
            if want is not None:
                if want == digest and sys.modules.get(name) is self.kept.get((name, digest)):
                    continue
                self._replace(name, want)
            elif check_files and _stat(path) != stat:
                self._evict(name)
        for name, want in wanted.items():  # kept versions of modules evicted meanwhile
            if name not in self.held and (name, want) in self.kept:
                self._install(name, want)
        self.count = len(sys.modules)

    def keep(self, modules: dict[str, types.ModuleType], digests: dict[str, bytes]) -> None:
        """Keep the modules a record shipped (name -> module) as the versions ``digests`` name,
        for :meth:`align` to put in place while that record's tasks run."""
        if self.caller and not in_worker():
            return
        for name, module in modules.items():
            digest = digests.get(name)
            if digest is not None:
                self.kept.setdefault((name, digest), module)

    def check(self, names: tuple, wanted: dict[str, bytes]) -> None:
        """Raise when a module of ``names`` (user modules a record could not ship) is here in
        another version than ``wanted`` lists (the worker would run other code than the
        caller's): its file changed since the caller loaded it."""
        if not names or (self.caller and not in_worker()):
            return
        for name in names:
            want = wanted.get(name)
            if want is None or name in self.others:
                continue
            if name not in sys.modules:
                try:
                    importlib.import_module(name)
                except Exception:  # noqa: S112 - the call fails the same way, saying why
                    continue
            self.observe()
            held = self.held.get(name)
            if held is not None and held[2] != want:
                raise PythagorasError(
                    f"user module {name!r} could not be sent to this worker with the function "
                    f"(its globals cannot be pickled), and its file here is not the version the "
                    f"caller has loaded (the file changed since the caller imported it). Reload "
                    f"it in the caller (importlib.reload({name.rsplit('.', 1)[-1]})) or restart "
                    f"the caller, so that both run the code in the file")

    def _replace(self, name: str, digest: bytes) -> None:
        if (name, digest) in self.kept:
            self._install(name, digest)
        else:
            self._evict(name)

    def _install(self, name: str, digest: bytes) -> None:
        module = self.kept[name, digest]
        sys.modules[name] = module
        spec = getattr(module, "__spec__", None)
        if spec is not None:  # records made here list the version in memory
            _SEEN[name] = (spec, digest)
        # No stat: the file may hold another version now, so any check of it evicts this one.
        self.held[name] = (_source_file(module) or "", None, digest)
        parent, _, child = name.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, module)

    def _evict(self, name: str) -> None:
        """Forget a module, so that the next import reads its file: also as its package's
        attribute (``from pkg import mod`` would take that one without importing)."""
        module = sys.modules.pop(name, None)
        self.held.pop(name, None)
        parent, _, child = name.rpartition(".")
        package = sys.modules.get(parent) if parent else None
        if package is not None and module is not None and package.__dict__.get(child) is module:
            delattr(package, child)
