"""The owner's manual override: ``pythagoras-node pause [--for 2h]`` and ``resume``.

A file in the home, ``paused.json`` (``{"since": t, "until": t or null}``, times of
``time.time()``): written by the CLI, read by the node once a second. A file rather than a
message to the running node: it works whether the node runs or not (a node started later is
paused too), survives a restart of the node, and needs no socket. An expired pause counts as
none.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

__all__ = ["PAUSE_FILE", "pause", "resume", "read_pause", "parse_duration"]

PAUSE_FILE = "paused.json"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``30m``, ``2h`` or ``1d``; ValueError naming the problem."""
    text = text.strip().lower()
    unit = _UNITS.get(text[-1:], None)
    number = text[:-1] if unit else text
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration: write 90s, 30m, 2h or 1d") from None
    if not seconds > 0:
        raise ValueError(f"{text!r}: a duration must be more than zero")
    return seconds


def pause(home: Path, seconds: float | None = None) -> dict:
    """Pause the node of ``home`` (for ``seconds``, else until :func:`resume`)."""
    now = time.time()
    state = {"since": now, "until": None if seconds is None else now + seconds}
    path = Path(home) / PAUSE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)
    return state


def resume(home: Path) -> bool:
    """Lift the manual pause; whether there was one."""
    try:
        (Path(home) / PAUSE_FILE).unlink()
        return True
    except FileNotFoundError:
        return False


def read_pause(home: Path, now: float | None = None) -> dict | None:
    """The pause in force (``{"since", "until"}``), or None (none, expired or unreadable)."""
    try:
        state = json.loads((Path(home) / PAUSE_FILE).read_text())
        since, until = float(state["since"]), state.get("until")
        until = None if until is None else float(until)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if until is not None and until <= (time.time() if now is None else now):
        return None
    return {"since": since, "until": until}
