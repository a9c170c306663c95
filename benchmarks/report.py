"""The result table every benchmark script prints (one row per metric, ours beside the anchors),
and the few helpers the benchmark scripts share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

__all__ = ["Row", "print_table", "median_seconds", "wait_until", "print_node_logs",
           "start_loopback_node", "child_result"]


@dataclass
class Row:
    metric: str
    ours: str
    anchors: str
    ratio: str
    target: str
    passed: bool


def print_table(rows: list[Row], ratio_header: str = "ratio") -> None:
    header = ("metric", "ours", "anchor(s)", ratio_header, "target", "pass/fail")
    cells = [header] + [(r.metric, r.ours, r.anchors, r.ratio, r.target,
                         "PASS" if r.passed else "FAIL") for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    print("\n".join(lines))


def median_seconds(action, repeats: int, *, warmup: int = 0) -> float:
    """Median wall time of ``action(i)`` over ``repeats`` runs, after ``warmup`` untimed ones
    (given ``-1, -2, ...``)."""
    for i in range(warmup):
        action(-1 - i)
    samples = []
    for i in range(repeats):
        t0 = time.perf_counter()
        action(i)
        samples.append(time.perf_counter() - t0)
    return median(samples)


def wait_until(condition, timeout: float, what: str) -> None:
    """Poll ``condition()`` until it is true; a RuntimeError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def print_node_logs(lan, lines: int = 30, hosts: int | None = None) -> None:
    """The last ``lines`` of the node log of each (of the first ``hosts``) hosts, to stderr."""
    for host in lan.hosts[:hosts]:
        try:
            text = host.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            continue
        print(f"--- last lines of the node log of host {host.index} ({host.ip}):", file=sys.stderr)
        print("\n".join(text), file=sys.stderr)


def start_loopback_node(home: Path, port: int, *flags: str, env: dict | None = None,
                        cwd: Path | None = None, timeout: float = 60,
                        poll: float = 0.05) -> subprocess.Popen:
    """``pythagoras-node start`` of ``home`` on 127.0.0.1:``port`` with mDNS off (and ``flags``),
    returned once it serves (its node.json is written); a RuntimeError if it does not."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pythagoras_p2p.cli.main", "start", "--bind", "127.0.0.1",
         "--port", str(port), "--no-mdns", *flags],
        env={**os.environ, "PYTHAGORAS_HOME": str(home), **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd or home)
    deadline = time.monotonic() + timeout
    while not (home / "node.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the node of {home} did not start")
        time.sleep(poll)
    return proc


def child_result(script: str, args: list[str], env: dict) -> dict:
    """Run ``script`` (a benchmark's own ``--child`` part) in a fresh interpreter with ``env``;
    the JSON it printed on its last ``RESULT `` line."""
    proc = subprocess.run([sys.executable, str(Path(script).resolve()), *args], env=env,
                          capture_output=True, text=True, timeout=1200, cwd=tempfile.gettempdir())
    found = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"the measurement with {env.get('PYTHONPATH')} failed:\n"
                           f"{proc.stdout}\n{proc.stderr}")
    return json.loads(found[-1][len("RESULT "):])
