"""Run the reliability suite and write docs/reliability.md from what it measured.

The reliability tests (loopback: tests/integration/test_reliability.py and
test_node_security.py; network namespaces: tests/swarm/test_faults.py) hand their figures to
``report_figures`` (tests/helpers.py), which appends them to the JSON list named by
``PYTHAGORAS_RELIABILITY_REPORT``. This script runs them with that variable set, then renders
one table per scenario (in the order of ``SCENARIOS``), and the outcome of every test.

The memory test makes 100,000 calls here (``PYTHAGORAS_RELIABILITY_CALLS``; a plain pytest run
makes 20,000 to stay fast); ``--quick`` keeps 20,000.

    python benchmarks/reliability_report.py [--quick] [--out docs/reliability.md] [-- PYTEST ARGS]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUITE = ["tests/integration/test_reliability.py", "tests/integration/test_node_security.py",
         "tests/swarm/test_faults.py"]

#: The rows of the reliability table, in order, with the scenario names the tests report under.
SCENARIOS = [
    ("host kill -9 mid-sync_parallel", "every result returned, correct, in order; in-flight "
     "calls rerouted within 5 s"),
    ("host frozen with SIGSTOP", "its calls reassigned within 10 s; its late results duplicate "
     "or corrupt nothing"),
    ("host link cut and restored", "calls reassigned within 10 s; the host rejoins and gets work"),
    ("worker killed by the call", "the node survives, the worker is replaced, the call fails "
     "after 3 tries with an error naming it"),
    ("the function raises", "raised once in the caller with its type and remote traceback; not "
     "retried, not cached"),
    ("node kill -9 while writing results", "the store always opens clean; every result "
     "acknowledged to a caller is present and verifies"),
    ("client processes killed holding read transactions", "no MDB_READERS_FULL; stale readers "
     "are cleared; the node keeps serving and a new client works"),
    ("vanished node still advertised by mDNS", "no work sent to it after 5 s"),
    ("hostile input", "zero executions, zero unpickling; the node stays up and serves members"),
    ("the authenticator not running", "the node refuses to serve"),
    ("tampered blob", "rejected (error code tampered), never stored, never used"),
    ("peer of another protocol or Python version", "never sent work; a clear message naming "
     "both versions"),
    ("trivial calls through one node", "all results; client and node memory bounded (peak RSS)"),
    ("SIGTERM to a node during work (a second node present)", "its running calls finish or "
     "move; it deregisters; no result lost or duplicated"),
]


def run_suite(figures: Path, junit: Path, calls: int, extra: list[str]) -> tuple[int, float]:
    env = {**os.environ, "PYTHAGORAS_RELIABILITY_REPORT": str(figures),
           "PYTHAGORAS_RELIABILITY_CALLS": str(calls)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
           *SUITE, *extra]
    print("running:", " ".join(cmd[2:]), flush=True)
    started = time.monotonic()
    code = subprocess.call(cmd, cwd=REPO, env=env)
    return code, time.monotonic() - started


def test_outcomes(junit: Path) -> list[dict]:
    if not junit.exists():
        return []
    outcomes = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        kind = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                kind = "FAILED" if child.tag == "failure" else "ERROR"
            elif child.tag == "skipped":
                kind = "skipped: " + (child.get("message") or "")[:80]
        module = case.get("classname", "").replace(".", "/") + ".py"
        outcomes.append({"test": f"{module}::{case.get('name')}", "outcome": kind,
                         "seconds": float(case.get("time", 0))})
    return outcomes


def _words(key: str) -> str:
    return key.replace("_", " ")


def _cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _short(test: str) -> str:
    return test.split("::", 1)[-1] if "::" in test else test


def render(entries: list[dict], outcomes: list[dict], code: int, seconds: float,
           calls: int) -> str:
    by_scenario: dict[str, list[dict]] = {}
    for entry in entries:
        by_scenario.setdefault(entry["scenario"], []).append(entry)
    passed = sum(o["outcome"] == "passed" for o in outcomes)
    failed = [o for o in outcomes if o["outcome"] in ("FAILED", "ERROR")]
    skipped = [o for o in outcomes if o["outcome"].startswith("skipped")]
    now = datetime.datetime.now().astimezone()
    lines = [
        "# Reliability",
        "",
        "Produced by `python benchmarks/reliability_report.py`, which runs",
        "`" + " ".join(["pytest", *SUITE]) + "`",
        "with `PYTHAGORAS_RELIABILITY_REPORT` set and writes down what the tests measured. "
        "Each scenario is a test asserting the exact outcome of its row of this table; the figures "
        "below are from this run, not estimates.",
        "",
        f"- date: {now:%Y-%m-%d %H:%M %Z}",
        f"- machine: {platform.platform()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        f"- result: {passed} passed, {len(failed)} failed, {len(skipped)} skipped in "
        f"{seconds:.0f} s (pytest exit status {code})",
        f"- trivial calls in the memory test: {calls:,}",
        "",
    ]
    if failed:
        lines += ["**Failed:** " + ", ".join(f"`{_short(o['test'])}`" for o in failed), ""]
    known = [name for name, _ in SCENARIOS]
    order = known + sorted(set(by_scenario) - set(known))
    for name in order:
        promise = dict(SCENARIOS).get(name, "")
        lines += [f"## {name}", ""]
        if promise:
            lines += [f"Must hold: {promise}.", ""]
        found = by_scenario.get(name, [])
        if not found:
            lines += ["_No figures from this run (its tests did not run or did not get that "
                      "far; see the test outcomes below)._", ""]
            continue
        tests = sorted({e["test"] for e in found})
        lines += ["Measured by " + ", ".join(f"`{_short(t)}`" for t in tests) + ".", ""]
        if len(found) == 1:
            lines += ["| figure | value |", "|---|---|"]
            lines += [f"| {_words(k)} | {_cell(v)} |" for k, v in found[0]["figures"].items()]
        else:
            keys: list[str] = []
            for e in found:
                keys += [k for k in e["figures"] if k not in keys]
            lines += ["| " + " | ".join(_words(k) for k in keys) + " |",
                      "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(_cell(e["figures"].get(k)) for k in keys) + " |"
                      for e in found]
        lines.append("")
    lines += ["## The store full", "",
              "Must hold: a clear error naming `pythagoras-node cache gc`; nothing corrupted. "
              "Tested by `tests/unit/test_store.py::test_full_store_is_a_clear_error_and_loses_"
              "nothing` (not part of this run).", ""]
    lines += ["## Test outcomes", "", "| test | outcome | seconds |", "|---|---|---|"]
    lines += [f"| `{o['test']}` | {o['outcome']} | {o['seconds']:.1f} |" for o in outcomes]
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 calls instead of 100,000")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "reliability.md")
    parser.add_argument("--figures", type=Path, help="also keep the raw figures (JSON) here")
    parser.add_argument("pytest_args", nargs="*", help="more arguments for pytest (after --)")
    args = parser.parse_args()
    calls = 20_000 if args.quick else 100_000
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        figures, junit = Path(tmp) / "figures.json", Path(tmp) / "junit.xml"
        code, seconds = run_suite(figures, junit, calls, args.pytest_args)
        entries = json.loads(figures.read_text()) if figures.exists() else []
        outcomes = test_outcomes(junit)
        if args.figures:
            args.figures.write_text(json.dumps(entries, indent=1) + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(entries, outcomes, code, seconds, calls))
    print(f"wrote {args.out} ({len(entries)} measurements, pytest exit status {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
