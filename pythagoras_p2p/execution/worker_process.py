"""One worker process as its pool sees it: spawning it, the frames on its pipes, how it ended.

A worker is ``python -m pythagoras_p2p.execution.worker_main RFD WFD SLOTFD PARENT``: a fresh interpreter with
one pipe each way, carrying length-prefixed pickles (:func:`send_frame`, :class:`FrameReader`),
and a shared 8-byte page in which it publishes the id of the task it is running
(:meth:`WorkerProcess.running`). :class:`pythagoras_p2p.execution.pool.WorkerPool` supervises them,
and with a :class:`WorkerWatch` finds those that make no progress (stopped with SIGSTOP: see
:mod:`pythagoras_p2p.stalls`), to kill and replace them like workers that crashed.
"""

from __future__ import annotations

import mmap
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..stalls import StallWatch, check_every

if TYPE_CHECKING:
    from .batch import Batch
    from .tasks import Task

__all__ = ["VERIFY", "VERIFY_MANY", "RunEntry", "HEADER", "SLOT", "send_frame", "FrameReader", "WorkerProcess", "spawn",
           "signal_description", "WorkerWatch"]

#: The fingerprint that asks a worker to verify a received value instead of running a call.
VERIFY = b"\0" * 32
#: ... and the one that asks it to verify many small values at once (replicas from peers).
#: The worker answers either one with a :class:`~.outcomes.Checked` outcome.
VERIFY_MANY = b"\0" * 31 + b"\1"

#: A task as a worker receives it, in a ``("run", [entry, ...])`` message: ``(seq, record key
#: (or VERIFY, VERIFY_MANY), call, payload, label, visible_gpus)``; ``visible_gpus``: the
#: ``CUDA_VISIBLE_DEVICES`` of the call ("" for none), or None where the machine has no GPU.
#: (A plain tuple: thousands cross the pipe each second.)
RunEntry = tuple[int, bytes, bytes, bytes, str, "str | None"]

#: The length prefix of a frame.
HEADER = struct.Struct("<Q")
SLOT = struct.Struct("<q")  # the id of the task a worker runs, in a page both share
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "BLIS_NUM_THREADS")


def send_frame(fd: int, obj: object) -> None:
    """Write one length-prefixed pickle to a blocking file descriptor."""
    data = pickle.dumps(obj, protocol=5)
    view = memoryview(HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


class FrameReader:
    """Splits a byte stream into length-prefixed pickles."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list:
        self.buf += data
        frames = []
        while len(self.buf) >= 8:
            (size,) = HEADER.unpack_from(self.buf)
            if len(self.buf) < 8 + size:
                break
            frames.append(pickle.loads(memoryview(self.buf)[8 : 8 + size]))
            del self.buf[: 8 + size]
        return frames


class WorkerProcess:
    """A running worker: its process, pipe ends, running-task page and the tasks sent to it."""

    __slots__ = ("n", "proc", "rfd", "wfd", "slot", "reader", "wbuf", "writing", "inflight", "ready",
                 "killed", "stalled")
    # Set by spawn, once the process runs:
    proc: subprocess.Popen[bytes]
    rfd: int  # the end of the pipe its frames arrive on
    wfd: int  # ... and the one it reads its tasks from
    slot: mmap.mmap  # the page where it publishes the id of the task it runs

    def __init__(self, n: int):
        self.n = n
        self.inflight: dict[int, tuple[Batch, Task]] = {}
        self.wbuf = bytearray()
        self.writing = False  # whether the selector watches the pipe for room to write
        self.reader = FrameReader()
        self.ready = False
        self.killed = False  # by its pool, to cancel a call: no call is to blame
        self.stalled: str | None = None  # why its pool killed it for making no progress

    @property
    def name(self) -> str:
        return f"w{self.n}"

    def running(self) -> int:
        return SLOT.unpack_from(self.slot)[0]

    def how_it_ended(self) -> str:
        """As in "the worker was killed by SIGKILL" (once its process has been waited for)."""
        return self.stalled or signal_description(self.proc.returncode)

    @property
    def usable(self) -> bool:
        """Whether tasks may still be sent to it (not being killed)."""
        return not (self.killed or self.stalled)


def spawn(n: int, home: Path, low_priority: bool = False) -> WorkerProcess:
    """Start worker ``n`` on ``home``; both its pipe ends are non-blocking on this side.
    ``low_priority``: the worker runs at nice 10 and the idle I/O class (a node's)."""
    worker = WorkerProcess(n)
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    slot_fd = os.memfd_create(f"pythagoras-{worker.name}", 0)
    os.ftruncate(slot_fd, SLOT.size)
    worker.slot = mmap.mmap(slot_fd, SLOT.size)
    SLOT.pack_into(worker.slot, 0, -1)
    env = dict(os.environ)
    for name in _THREAD_ENV:
        env.setdefault(name, "1")
    env["PYTHAGORAS_HOME"] = str(home)
    try:
        worker.proc = subprocess.Popen(
            [sys.executable, "-m", "pythagoras_p2p.execution.worker_main",
             str(to_child_r), str(from_child_w), str(slot_fd), str(os.getpid())],
            pass_fds=(to_child_r, from_child_w, slot_fd), env=env, stdin=subprocess.DEVNULL,
            start_new_session=False,
        )
    finally:
        for fd in (to_child_r, from_child_w, slot_fd):
            os.close(fd)
    if low_priority:
        lower_priority(worker.proc.pid)
    worker.rfd, worker.wfd = from_child_r, to_child_w
    os.set_blocking(worker.wfd, False)
    os.set_blocking(worker.rfd, False)
    return worker


def lower_priority(pid: int) -> None:
    """Let the machine's owner come first: CPU nice 10 (at least) and the idle I/O class for
    ``pid``, set as it starts (before it runs any call). Where the system refuses, unchanged."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, max(10, os.getpriority(os.PRIO_PROCESS, pid)))
    except (OSError, AttributeError):  # not a Unix, or the process is already gone
        pass
    try:
        import psutil

        psutil.Process(pid).ionice(psutil.IOPRIO_CLASS_IDLE)
    except Exception:  # psutil.Error, or no I/O classes on this system (not Linux)
        pass


def signal_description(returncode: int | None) -> str:
    """How a worker ended, from its return code, as in "the worker was killed by SIGKILL"."""
    if returncode is None:
        return "stopped responding"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


class WorkerWatch:
    """Which workers running calls make no progress: looked at every
    :func:`~pythagoras_p2p.stalls.check_every` seconds while any runs something (an idle
    worker is looked at once it is given a task).

    Its pool kills a stalled worker; the call it was running counts one attempt, as if it had
    crashed the worker (a call whose process is stopped every time then fails after
    ``MAX_TASK_CRASHES`` attempts instead of hanging), and its other tasks go to the other
    workers without blame. Nothing it computed is lost or stored twice: its outcomes written
    before it stopped are read, the others never arrive."""

    def __init__(self) -> None:
        self.stalls = StallWatch()
        self.every = check_every()
        self.next_look = 0.0

    def due(self, workers: list[WorkerProcess], now: float) -> bool:
        if now >= self.next_look:
            for worker in workers:
                if worker.inflight:
                    return True
        return False

    def wait(self, workers: list[WorkerProcess], longest: float) -> float:
        """How long the supervisor may wait for its pipes before it should look again."""
        for worker in workers:
            if worker.inflight:
                return min(longest, max(0.0, self.next_look - time.monotonic()))
        return longest

    def stalled(self, workers: list[WorkerProcess]) -> list[WorkerProcess]:
        """The workers found stalled by this look (when one is due); each gets its
        :attr:`~WorkerProcess.stalled` reason."""
        now = time.monotonic()
        if not self.due(workers, now):
            return []
        self.next_look = now + self.every
        busy = [w for w in workers if w.inflight and w.usable]
        self.stalls.keep_only({w.proc.pid for w in busy})
        found = []
        for worker in busy:
            if self.stalls.stalled(worker.proc.pid, now):
                worker.stalled = (f"was stopped (SIGSTOP or a debugger) for {self.stalls.after:g} s "
                                  f"and made no progress")
                self.stalls.forget(worker.proc.pid)
                found.append(worker)
        return found
