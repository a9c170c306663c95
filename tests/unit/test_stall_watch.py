"""A process stopped for a while is stalled; a sleeping or busy one never is; a lease's holder is
found through /proc (pythagoras_p2p.stalls, pythagoras_p2p.store.lease_holders)."""

from __future__ import annotations

import fcntl
import signal
import subprocess
import sys
import time

import pytest
from helpers import wait_for

from pythagoras_p2p.stalls import StallWatch, process_state
from pythagoras_p2p.store.holds import LockFile
from pythagoras_p2p.store.lease_holders import Holders


@pytest.fixture
def child():
    procs = []

    def start(code: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(30)


def watch_for(watch: StallWatch, pid: int, seconds: float) -> bool:
    """Whether ``pid`` is ever found stalled while it is looked at for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if watch.stalled(pid):
            return True
        time.sleep(0.02)
    return False


def test_a_stopped_process_is_stalled_after_a_while_and_no_longer_once_continued(child):
    proc = child("import time; time.sleep(600)")
    proc.send_signal(signal.SIGSTOP)
    wait_for(lambda: process_state(proc.pid)[0] == "T", 30, message="the child to stop")
    watch = StallWatch(after=0.3)
    assert not watch.stalled(proc.pid)  # a first look only starts the clock
    t0 = time.monotonic()
    assert wait_for(lambda: watch.stalled(proc.pid), 30, message="a stall")
    assert time.monotonic() - t0 >= 0.3
    proc.send_signal(signal.SIGCONT)
    wait_for(lambda: process_state(proc.pid)[0] != "T", 30, message="the child to continue")
    assert not watch.stalled(proc.pid)


@pytest.mark.parametrize("code", ["import time; time.sleep(600)", "while True: pass"])
def test_a_sleeping_or_busy_process_is_never_stalled(child, code):
    proc = child(code)
    assert not watch_for(StallWatch(after=0.2), proc.pid, 1.0)


def test_a_process_that_is_gone_is_not_stalled():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(30)
    assert process_state(proc.pid) is None and not StallWatch(after=0).stalled(proc.pid)


def test_the_holder_of_a_lease_byte_is_found_and_judged(child, tmp_path):
    path = tmp_path.resolve() / "00.lock"
    mine = LockFile(path)
    mine.set(fcntl.F_RDLCK, 1, wait=False)  # this process's own descriptor is never a holder
    holder = child(
        "import fcntl, sys\n"
        "from pythagoras_p2p.store.holds import LockFile\n"
        f"f = LockFile({str(path)!r}); f.set(fcntl.F_WRLCK, 123456789, wait=False)\n"
        "print('held', flush=True); sys.stdin.read()\n"
    )
    assert holder.stdout.readline().strip() == "held"
    holders = Holders([path])
    assert holders._holders(0, 123456789) == [holder.pid]
    assert holders._holders(0, 123456788) == []
    assert not holders.stalled(0, 123456789)  # running
    holders._stalls.after = 0.2
    holder.send_signal(signal.SIGSTOP)
    assert wait_for(lambda: holders.stalled(0, 123456789), 30, message="the holder to stall")
    assert not holders.stalled(0, 1)  # a byte nobody holds has no stalled holder
