"""Client programs for swarm tests: run on a host of a Lan in the background, output in files.

A client program is Python source run with ``python -c`` inside a host; it reports with
``emit(**fields)`` (one JSON object per stdout line), and can wait for the test with
``wait_file(path)``. Pure functions that take ``marks`` leave one file per started attempt in
that folder (shared by every host: namespaces share the filesystem), saying which call started
where and when, so a test can tell which host ran, and re-ran, what.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import textwrap
from pathlib import Path

from helpers import wait_for

PRELUDE = textwrap.dedent('''
    import json, os, sys, time
    from pythagoras_p2p import *

    def emit(**fields):
        print(json.dumps(fields), flush=True)

    def wait_file(path, timeout=60):
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out after {timeout}s waiting for {path}")
            time.sleep(0.02)
''')

#: ``where(x=, pause=, marks=)``: returns ``[x*x, home of the node it ran on]`` after ``pause``.
WHERE = textwrap.dedent('''
    @cloud.add_pure_function
    def where(*, x, pause=0.0, marks=""):
        import json, os, time, uuid
        if marks:
            path = os.path.join(marks, f"{x}.{uuid.uuid4().hex}")
            with open(path + ".tmp", "w") as f:
                json.dump({"x": x, "home": os.environ["PYTHAGORAS_HOME"], "t": time.time()}, f)
            os.rename(path + ".tmp", path)
        time.sleep(pause)
        return [x * x, os.environ["PYTHAGORAS_HOME"]]
''')

_numbers = itertools.count()


class Client:
    """A client program running on ``host``; ``result()`` waits for it and returns its last emit."""

    def __init__(self, host, body: str, *, cloud: str = "cloud = PCloud()", env: dict | None = None):
        n = next(_numbers)
        self.host = host
        self.out = host.lan.root / f"client{n}.out"
        self.err = host.lan.root / f"client{n}.err"
        code = PRELUDE + cloud + "\n" + WHERE + textwrap.dedent(body)
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = host.popen([sys.executable, "-c", code], env=env, stdout=out, stderr=err)

    def emitted(self) -> list[dict]:
        lines = self.out.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{") and line.endswith("}")]

    def wait_emit(self, key: str, timeout: float = 60) -> dict:
        """The first emitted object that has ``key``, waiting for it."""
        def found():
            if self.proc.poll() is not None and not any(key in e for e in self.emitted()):
                raise AssertionError(f"the client exited ({self.proc.returncode}) before saying "
                                     f"{key!r}:\n{self.stderr()}")
            return next((e for e in self.emitted() if key in e), None)

        return wait_for(found, timeout, message=f"the client to say {key!r}")

    def stderr(self) -> str:
        return self.err.read_text()

    def wait(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout)

    def result(self, timeout: float = 120) -> dict:
        code = self.wait(timeout)
        assert code == 0, f"the client failed ({code}):\n{self.stderr()}"
        emitted = self.emitted()
        assert emitted, f"the client said nothing:\n{self.stderr()}"
        return emitted[-1]


def read_marks(folder: Path) -> list[dict]:
    """Every attempt that started, oldest first: ``{"x", "home", "t"}``."""
    marks = []
    for name in os.listdir(folder):
        if not name.endswith(".tmp"):
            marks.append(json.loads((Path(folder) / name).read_text()))
    return sorted(marks, key=lambda m: m["t"])


def whole_swarm_known(lan, host_index: int = 0, timeout: float = 30) -> None:
    """Wait until the node of ``host_index`` lists every node of the Lan that runs."""
    ids = {h.node_info()["id"] for h in lan.hosts if h.node_info()}
    wait_for(lambda: {p["id"] for p in lan.hosts[host_index].status()["peers"]} == ids, timeout,
             interval=0.1, message=f"host {host_index}'s node to list every node")
