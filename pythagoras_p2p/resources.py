"""Resources: what a machine has (cpus, memory, gpus, custom ones) and what a call needs.

A node declares ``cpus`` (its worker slots), ``memory`` (total bytes of RAM), ``gpus`` (NVIDIA
GPUs found through ``nvidia-ml-py``, 0 without it) and any custom resource given with
``pythagoras-node start --resources license=2,scratch=500`` (``PYTHAGORAS_RESOURCES``). A pure function
asks with ``@cloud.add_pure_function(resources={"gpus": 1, "memory": "8G"})``. Resources decide
placement only and never enter a call's address.

A call runs only where the free resources cover what it asks, and holds them while it runs
(:class:`Ledger`, kept by each worker pool: the node's, or the embedded default's). Amounts are
numbers (whole ones for ``gpus`` and ``cpus``) or, for ``memory``, sizes like ``"8G"``.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from typing import Any

from .defaults import parse_size
from .errors import ConfigurationError

__all__ = ["Needs", "parse_needs", "parse_spec", "custom_resources", "machine_resources",
           "detect_gpus", "Ledger", "lacking", "describe", "summary", "from_wire"]

#: What a call asks for: sorted ``(name, amount)`` pairs, none of them zero (hashable, cheap).
Needs = tuple

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_WHOLE = ("cpus", "gpus")
#: Names that are near misses of a standard one: refused, naming it (``gpu=1`` would otherwise
#: be a custom resource of its own, which no call asking for ``gpus`` would ever use).
_MEANT = {"gpu": "gpus", "cpu": "cpus", "cores": "cpus", "mem": "memory", "ram": "memory",
          "GPU": "gpus", "GPUs": "gpus", "CPU": "cpus", "CPUs": "cpus"}


def _amount(name: str, value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigurationError(f"{where}: {name}={value!r}; give a number" +
                                 (" or a size like '8G'" if name == "memory" else ""))
    if isinstance(value, str):
        try:
            number = float(parse_size(value)) if name == "memory" else float(value.strip())
        except ValueError:
            raise ConfigurationError(
                f"{where}: {name}={value!r} is not " +
                ("a size (write e.g. 8G, 512M or a number of bytes)" if name == "memory"
                 else "a number")) from None
    else:
        number = float(value)
    if not (math.isfinite(number) and number >= 0):
        raise ConfigurationError(f"{where}: {name}={value!r}; an amount is a number of 0 or more")
    if name in _WHOLE and number != int(number):
        raise ConfigurationError(f"{where}: {name}={value!r}; {name} are counted in whole numbers")
    return number


def _name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigurationError(
            f"{where}: {name!r} is not a resource name; use letters, digits, '_', '.' or '-', "
            f"starting with a letter (e.g. gpus, memory, license)")
    if name in _MEANT:
        raise ConfigurationError(
            f"{where}: {name!r} is not a resource name; did you mean {_MEANT[name]!r}? (the "
            f"standard ones are cpus, memory and gpus)")
    return name


def parse_needs(resources: Mapping[str, Any] | None, where: str = "resources=") -> Needs:
    """What a function asks for, checked: ``{"gpus": 1, "memory": "8G"}`` → sorted pairs."""
    if resources is None:
        return ()
    if not isinstance(resources, Mapping):
        raise ConfigurationError(f"{where} takes a dict like {{'gpus': 1, 'memory': '8G'}}, not "
                                 f"a {type(resources).__name__}")
    needs = {}
    for name, value in resources.items():
        name = _name(name, where)
        amount = _amount(name, value, where)
        if amount:
            needs[name] = amount
    return tuple(sorted(needs.items()))


def parse_spec(text: str, where: str = "--resources") -> dict[str, float]:
    """A node's custom resources: ``"gpu=1,license=2"`` (commas or spaces between them)."""
    found: dict[str, float] = {}
    for item in text.replace(",", " ").split():
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ConfigurationError(
                f"{where} {item!r}: write name=amount, e.g. gpus=1,license=2")
        name = _name(name, f"{where} {item!r}")
        found[name] = _amount(name, value, f"{where} {item!r}")
    return found


def custom_resources() -> dict[str, float]:
    """This machine's resources as ``PYTHAGORAS_RESOURCES`` declares them (``license=2``)."""
    import os

    return parse_spec(os.environ.get("PYTHAGORAS_RESOURCES", ""), "PYTHAGORAS_RESOURCES")


def detect_gpus() -> int:
    """NVIDIA GPUs of this machine, through ``nvidia-ml-py`` (0 when it is not installed, no
    driver answers, or there is no GPU)."""
    try:
        import pynvml
    except ImportError:
        return 0
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver, no device: NVMLError's subclasses
        return 0
    try:
        return int(pynvml.nvmlDeviceGetCount())
    except Exception:
        return 0
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def machine_resources(workers: int, custom: Mapping[str, float] | None = None) -> dict[str, float]:
    """What this machine offers: its worker slots, RAM, GPUs, and ``custom`` (which may also
    set a standard one, e.g. ``gpus=0`` to keep calls that want GPUs away)."""
    import psutil

    found = {"cpus": float(workers), "memory": float(psutil.virtual_memory().total),
             "gpus": float(detect_gpus())}
    found.update(custom or {})
    return found


def lacking(needs: Needs, totals: Mapping[str, float]) -> list[str]:
    """What of ``needs`` a machine with ``totals`` could never give: ``["gpus: 1 asked, 0 there"]``
    (naming the closest resource it has when it has none of that name: a misspelling)."""
    return [f"{name}: {describe(name, amount)} asked, {describe(name, totals.get(name, 0))} there"
            + _closest(name, totals)
            for name, amount in needs if totals.get(name, 0) < amount]


def _closest(name: str, totals: Mapping[str, float]) -> str:
    """`` (did you mean 'license'?)`` when ``name`` is missing and a resource of ``totals`` is
    spelled like it, else ""."""
    if name in totals:
        return ""
    near = difflib.get_close_matches(name, [n for n in totals if totals[n]], n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


def describe(name: str, amount: float) -> str:
    if name == "memory":
        for unit, size in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
            if amount >= size:
                return f"{amount / size:.3g}{unit}"
        return f"{amount:.0f}"
    return f"{amount:g}"


def summary(resources: Mapping[str, float]) -> str:
    """``cpus=2,gpus=1,memory=16G,license=2``: what a node has, for people and mDNS."""
    return ",".join(f"{name}={describe(name, amount)}" for name, amount in sorted(resources.items()))


def from_wire(value: Any) -> Needs:
    """Needs sent by a client, checked like a decoration's (ConfigurationError if malformed)."""
    if not isinstance(value, dict):
        raise ConfigurationError("needs must be an object of name: amount")
    return parse_needs(value, "needs")


class Ledger:
    """What a machine has and what its running calls hold, for one worker pool.

    ``cpus`` is held one per busy worker by every call (the pool's own count) and beyond that by
    calls that ask for more; the rest is held only by calls that ask. ``take`` returns the GPU
    indices given (a tuple, empty when none were asked), or None when the call does not fit now.
    """

    def __init__(self, totals: Mapping[str, float]):
        self.totals = dict(totals)
        self.used: dict[str, float] = {}
        self._free_gpus = list(range(int(self.totals.get("gpus", 0))))

    @property
    def has_gpus(self) -> bool:
        return bool(self.totals.get("gpus"))

    def could_ever(self, needs: Needs) -> list[str]:
        return lacking(needs, self.totals)

    def fits(self, needs: Needs, busy_workers: int = 0) -> bool:
        used, totals = self.used, self.totals
        for name, amount in needs:
            held = used.get(name, 0.0) + (busy_workers if name == "cpus" else 0.0)
            if held + amount > totals.get(name, 0.0) + 1e-9:
                return False
        return True

    def take(self, needs: Needs, busy_workers: int = 0) -> tuple | None:
        if not self.fits(needs, busy_workers):
            return None
        gpus: tuple = ()
        for name, amount in needs:
            if name == "cpus":  # the worker's own cpu is counted as a busy worker
                amount -= 1
            self.used[name] = self.used.get(name, 0.0) + amount
            if name == "gpus":
                gpus = tuple(self._free_gpus[: int(amount)])
                del self._free_gpus[: int(amount)]
        return gpus

    def give(self, needs: Needs, gpus: tuple) -> None:
        for name, amount in needs:
            if name == "cpus":
                amount -= 1
            self.used[name] = self.used.get(name, 0.0) - amount
        self._free_gpus.extend(gpus)
        self._free_gpus.sort()

    def in_use(self, busy_workers: int) -> dict[str, float]:
        held = {name: round(amount, 6) for name, amount in self.used.items() if amount}
        held["cpus"] = held.get("cpus", 0) + busy_workers
        return held
