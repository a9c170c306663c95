"""``requires=``: parsing PEP 508 requirement specifiers and checking them against installed packages."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata

from .errors import ConfigurationError

__all__ = ["parse_requirements", "missing_requirements"]


def parse_requirements(requires: str | Iterable[str] | None) -> tuple[str, ...]:
    """Normalize ``requires=`` to a tuple of specifiers, each checked for syntax.

    It takes one string of specifiers separated by commas or whitespace (``"numpy pandas>=2"``)
    or an iterable of them.
    """
    if requires is None:
        return ()
    if isinstance(requires, str):
        items = requires.replace(",", " ").split()
    else:
        try:
            items = [str(r).strip() for r in requires]
        except TypeError:
            raise ConfigurationError(
                f"requires= takes a string like 'numpy pandas>=2' or a list of them, "
                f"not a {type(requires).__name__}"
            ) from None
    from packaging.requirements import InvalidRequirement, Requirement

    out = []
    for item in items:
        if not item:
            continue
        try:
            Requirement(item)
        except InvalidRequirement as exc:
            raise ConfigurationError(
                f"requires= has an invalid requirement {item!r} ({exc}); use pip's syntax, "
                f"e.g. 'numpy' or 'pandas>=2', with no spaces inside one requirement"
            ) from None
        out.append(item)
    return tuple(out)


def missing_requirements(requires: Iterable[str]) -> list[str]:
    """Which of ``requires`` this Python environment does not satisfy, each with what it has."""
    from packaging.requirements import Requirement

    missing = []
    for item in requires:
        req = Requirement(item)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append(f"{item} (not installed)")
            continue
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            missing.append(f"{item} (installed: {version})")
    return missing
