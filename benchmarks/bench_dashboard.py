"""What ``pythagoras-node dashboard`` costs a node while a page is open.

One node (``--bind 127.0.0.1 --no-mdns``, 2 workers, a few hundred results in its store), CPU
over the same window, median of the windows:

1. the node alone, idle: the baseline;
2. the node with the dashboard open in headless Chromium (Debian's, driven by Playwright; the
   page takes a snapshot a second over server-sent events): the node's processes, and the node
   with the dashboard's process. Target: under 1 % of a core for the two together;
3. the anchor: the same node watched by the terminal view, ``pythagoras-node status --watch``
   (one refresh a second): the node with that process.

The browser's own CPU is the watcher's machine's, not the node's, and is not counted.

    python benchmarks/bench_dashboard.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from bench_node import cpu_fraction, free_port, start_node, stop  # benchmarks/ is on sys.path
from report import Row, print_table

from pythagoras_p2p import PCloud
from pythagoras_p2p.net.security import create_key

CHROMIUM = "/usr/bin/chromium"


def fill(port: int, home: Path) -> None:
    """A few hundred results of two functions, for the cache's table."""
    cloud = PCloud(connection=f"127.0.0.1:{port}", home=home)

    @cloud.add_pure_function
    def square(*, x):
        return x * x

    @cloud.add_pure_function
    def block(*, x):
        return bytes(1000) * (x % 7)

    square.sync_parallel({"x": i} for i in range(300))
    block.sync_parallel({"x": i} for i in range(100))


def cli(home: Path, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pythagoras_p2p.cli.main", *args],
                            env={**os.environ, "PYTHAGORAS_HOME": str(home)}, cwd=home, **kwargs)


def windows(pids: list[int], seconds: float, count: int) -> float:
    return median(cpu_fraction(pids, seconds) for _ in range(count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter windows")
    args = parser.parse_args()
    seconds, count = (5.0, 2) if args.quick else (20.0, 3)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "node"
        home.mkdir()
        create_key(home, name="bench")
        port = free_port()
        node, _ = start_node(home, port)
        try:
            fill(port, home)  # a client of this machine's home
            time.sleep(2)
            idle = windows([node.pid], seconds, count)

            web_port = free_port()
            dashboard = cli(home, "dashboard", "--port", str(web_port), stdout=subprocess.PIPE,
                            text=True)
            line = dashboard.stdout.readline()
            url = re.search(r"(http://\S+)", line).group(1)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = browser.new_page()
                page.goto(url)
                page.wait_for_selector(".node")
                time.sleep(3)  # past the first snapshot and the first count of functions
                node_web = windows([node.pid], seconds, count)
                both_web = windows([node.pid, dashboard.pid], seconds, count)
                updates = page.evaluate("document.querySelectorAll('.node').length")
                browser.close()
            stop(dashboard)

            watch = cli(home, "status", "--watch", "--interval", "1", stdout=subprocess.DEVNULL)
            time.sleep(3)
            both_watch = windows([node.pid, watch.pid], seconds, count)
            stop(watch)
        finally:
            stop(node)

    def pct(x: float) -> str:
        return f"{100 * x:.2f} % of a core"

    rows = [
        Row("node, idle (baseline)", pct(idle), "-", "-", "-", True),
        Row("node, dashboard open", pct(node_web), f"idle {pct(idle)}",
            f"+{100 * (node_web - idle):.2f} pt", "-", True),
        Row("node + dashboard process, page open", pct(both_web),
            f"status --watch: {pct(both_watch)}",
            f"{both_web / both_watch:.2f}x" if both_watch else "-", "< 1 % of a core",
            both_web < 0.01),
    ]
    print(f"(medians of {count} windows of {seconds:g} s; the page showed {updates} node(s))")
    print_table(rows, "ratio to anchor")


if __name__ == "__main__":
    main()
