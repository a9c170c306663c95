"""What a node says of its environment when asked (``probe`` with ``about``): for ``doctor``.

Two machines share a call's result only when the call has the same address on both, and the
address holds the Python minor version and the versions of the installed packages the function
uses. A node answers a probe that asks ``about`` with its clock, its Python and release, and the
versions it has of the distributions named in ``packages`` (the asker's own), so that the asker
can say which differences keep their results apart. Nothing here is secret: a member asks.
"""

from __future__ import annotations

import re
import time
from typing import Any

__all__ = ["installed", "about", "MAX_PACKAGES"]

#: Names a probe may ask about (a member asks; the answer stays small).
MAX_PACKAGES = 4096


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, str]:
    """Every distribution this interpreter sees, by normalized name → version."""
    from importlib.metadata import distributions

    found: dict[str, str] = {}
    for dist in distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            found.setdefault(_normal(name), dist.version)
    return found


def about(packages: Any) -> dict:
    """A probe's answer when it asks ``about``: clock, Python, release, and package versions
    (None for a package not installed here) of the names asked."""
    from .. import __version__
    from .wire import PROTOCOL_VERSION, PYTHON_VERSION

    names = [str(p) for p in packages[:MAX_PACKAGES]] if isinstance(packages, list) else []
    have = installed() if names else {}
    return {"time": time.time(), "python": PYTHON_VERSION, "protocol": PROTOCOL_VERSION,
            "release": __version__, "versions": {n: have.get(_normal(n)) for n in names}}
