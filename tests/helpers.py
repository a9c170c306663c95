"""Helpers every kind of test uses: waiting for a condition, running a fresh interpreter."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

def wait_for(condition, timeout: float = 30.0, interval: float = 0.02, message: str = "condition"):
    """Poll ``condition()`` until it is truthy or ``timeout`` passes (then fail the test)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def run_python(code: str, *, env: dict | None = None, cwd: str | os.PathLike | None = None,
               timeout: float = 120, check: bool = True):
    """Run ``python -c code`` in a fresh interpreter and return the CompletedProcess."""
    import subprocess

    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-c", code], env=full_env, cwd=cwd, timeout=timeout,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"python -c failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


REPORT_ENV = "PYTHAGORAS_RELIABILITY_REPORT"


def report_figures(scenario: str, **figures) -> None:
    """Add measured figures of ``scenario`` to the JSON list at ``$PYTHAGORAS_RELIABILITY_REPORT``.

    Nothing happens when the variable is unset. ``benchmarks/reliability_report.py`` sets it and
    renders docs/reliability.md from the list; each entry names the test that measured it.
    """
    import fcntl
    import json

    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    entry = {"scenario": scenario, "test": test, "figures": figures}
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        text = fh.read().strip()
        entries = json.loads(text) if text else []
        entries.append(entry)
        fh.seek(0)
        fh.truncate()
        json.dump(entries, fh, indent=1)
