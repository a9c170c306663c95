"""Whose code is it: the user's own (fingerprinted by content, sent by value) or an installed
package's (named, with its version)."""

from __future__ import annotations

import os
import sys
import sysconfig

__all__ = ["is_user_code", "installed_name"]


def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots |= {os.path.dirname(os.__file__), sys.base_prefix, sys.prefix}
    return tuple(os.path.realpath(r) + os.sep for r in roots)


_INSTALLED_ROOTS = _installed_roots()
_BY_NAME_PACKAGES = ("pythagoras_p2p",)


def is_user_code(module_name: str | None) -> bool:
    """True for code the user writes (``__main__``, a notebook, a module of their own project).

    Such code is fingerprinted by content and travels by value; code of installed packages and
    the standard library is referred to by name and version.
    """
    if not module_name or module_name == "__main__":
        return True
    if module_name.split(".", 1)[0] in _BY_NAME_PACKAGES or module_name in sys.builtin_module_names:
        return False
    module = sys.modules.get(module_name)
    if module is None:
        return True  # made by exec() under an invented name: nothing to import it by
    path = getattr(module, "__file__", None)
    if not path:
        return False
    return not os.path.realpath(path).startswith(_INSTALLED_ROOTS)


_versions: dict[str, str] = {}


def installed_name(module_name: str | None, qualname: str = "") -> str:
    """``module.qualname@version``: how code of an installed package is named in a fingerprint."""
    top = (module_name or "").split(".", 1)[0]
    version = _versions.get(top)
    if version is None:
        version = getattr(sys.modules.get(top), "__version__", None)
        if not isinstance(version, str):
            try:
                from importlib.metadata import version as dist_version

                version = dist_version(top)
            except Exception:  # the standard library, or a module without distribution metadata
                version = ""
        _versions[top] = version
    return f"{module_name}.{qualname}@{version}"
