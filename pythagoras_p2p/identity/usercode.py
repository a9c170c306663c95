"""Whose code is it: the user's own (fingerprinted by content, sent by value) or an installed
package's (named, with its version).

"Installed" means put there by a package manager, not "somewhere under this interpreter's
prefix": the standard library (``sys.stdlib_module_names`` and the files of its directories), a
module in a site directory (where pip, conda and the system's packages install), or a module
that a distribution's metadata (``*.dist-info``) beside it claims. Everything else is the
user's: ``__main__`` and notebooks, their project's modules wherever they live (also inside
``sys.prefix``, as when a project keeps its virtual environment in its own folder), namespace
packages of their project (no ``__init__.py``, no ``__file__``), and a package of theirs
installed in editable mode (its files stay in the project, outside every site directory). When
unsure, it is the user's: walking code by content costs a little time, naming it by version can
miss an edit. The answer for a module is kept until a new module object takes its name.
"""

from __future__ import annotations

import json
import os
import site
import sys
import sysconfig
import threading

__all__ = ["is_user_code", "installed_name"]

_BY_NAME_PACKAGES = ("pythagoras_p2p",)
_STDLIB_NAMES = frozenset(getattr(sys, "stdlib_module_names", ())) | frozenset(sys.builtin_module_names)


def _real(path: str) -> str:
    return os.path.realpath(path) + os.sep


def _site_roots() -> tuple[str, ...]:
    """The directories package managers install into."""
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("purelib", "platlib") if k in paths}
    try:
        roots.update(site.getsitepackages())
    except AttributeError:  # an old virtualenv's site module
        pass
    user_site = getattr(site, "USER_SITE", None)
    if user_site:
        roots.add(user_site)
    roots.update(p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages"))
    return tuple(_real(r) for r in roots if r)


def _stdlib_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib") if k in paths}
    roots.add(os.path.dirname(os.__file__))
    return tuple(_real(r) for r in roots)


_SITE_ROOTS = _site_roots()
_STDLIB_ROOTS = _stdlib_roots()
_lock = threading.Lock()
_answers: dict[str, tuple[object, bool]] = {}  # module name -> (module, is the user's)
_claimed: dict[str, frozenset[str]] = {}  # a directory -> the top-level names its dist-infos claim


def is_user_code(module_name: str | None) -> bool:
    """True for code the user writes (``__main__``, a notebook, a module of their own project).

    Such code is fingerprinted by content and travels by value; code of installed packages and
    the standard library is referred to by name and version.
    """
    if not module_name or module_name == "__main__":
        return True
    top = module_name.split(".", 1)[0]
    if top in _BY_NAME_PACKAGES or module_name in sys.builtin_module_names:
        return False
    module = sys.modules.get(module_name)
    if module is None:  # made by exec() under an invented name: nothing to import it by
        return top not in _STDLIB_NAMES
    known = _answers.get(module_name)
    if known is not None and known[0] is module:
        return known[1]
    answer = _is_users(module, top)
    with _lock:
        _answers[module_name] = (module, answer)
    return answer


def _files_of(module: object) -> list[str]:
    """Where a module's code is: its file, or the directories of a (namespace) package."""
    scope = getattr(module, "__dict__", {})
    path = scope.get("__file__")
    if isinstance(path, str) and path:
        return [path]
    portions = scope.get("__path__")
    try:
        return [p for p in portions if isinstance(p, str)] if portions is not None else []
    except TypeError:
        return []


def _is_users(module: object, top: str) -> bool:
    files = [os.path.realpath(f) for f in _files_of(module)]
    if not files:  # built by code at run time (types.ModuleType), or a frozen module
        return top not in _STDLIB_NAMES
    # By its files, not its name: a module of the user's named like one of the standard
    # library (``nt``, ``winreg`` on Linux; or one shadowing it) is the user's.
    if all(f.startswith(_SITE_ROOTS) for f in files):
        return False
    if all(f.startswith(_STDLIB_ROOTS) for f in files):
        return False
    return not all(top in _claimed_in(_entry_of(f, top)) for f in files)


def _entry_of(path: str, top: str) -> str:
    """The directory a module's top-level package (or module) was imported from."""
    parts = path.split(os.sep)
    for i in range(len(parts) - 1, 0, -1):
        if parts[i] == top or parts[i].split(".", 1)[0] == top:
            return os.sep.join(parts[:i]) or os.sep
    return os.path.dirname(path)


def _claimed_in(directory: str) -> frozenset[str]:
    """Top-level names that distribution metadata in ``directory`` says were installed there."""
    found = _claimed.get(directory)
    if found is not None:
        return found
    names: set[str] = set()
    try:
        entries = [e for e in os.scandir(directory) if e.name.endswith((".dist-info", ".egg-info"))]
    except OSError:
        entries = []
    for entry in entries:
        names.update(_tops_of(entry.path))
    found = frozenset(names)
    with _lock:
        _claimed[directory] = found
    return found


def _tops_of(info: str) -> set[str]:
    """The top-level names a ``*.dist-info`` installed (none for an editable install: its
    code stays where the user edits it)."""
    def read(name: str) -> str:
        try:
            with open(os.path.join(info, name), encoding="utf-8") as fh:
                return fh.read()
        except OSError:
            return ""

    try:
        direct = json.loads(read("direct_url.json") or "{}")
    except ValueError:
        direct = {}
    if isinstance(direct, dict) and (direct.get("dir_info") or {}).get("editable"):
        return set()
    tops = {line.strip() for line in read("top_level.txt").splitlines() if line.strip()}
    for line in read("RECORD").splitlines():
        first = line.split(",", 1)[0].split("/", 1)[0]
        if first and first != ".." and not first.endswith((".dist-info", ".egg-info", ".pth")):
            tops.add(first[:-3] if first.endswith(".py") else first)
    return tops


_versions: dict[str, str] = {}


def installed_name(module_name: str | None, qualname: str = "") -> str:
    """``module.qualname@version``: how code of an installed package is named in a fingerprint."""
    top = (module_name or "").split(".", 1)[0]
    version = _versions.get(top)
    if version is None:
        module = sys.modules.get(top)
        version = getattr(module, "__dict__", {}).get("__version__") if module is not None else None
        if not isinstance(version, str):
            try:
                from importlib.metadata import version as dist_version

                version = dist_version(top)
            except Exception:  # the standard library, or a module without distribution metadata
                version = ""
        _versions[top] = version
    return f"{module_name}.{qualname}@{version}"
