"""Entry point of a worker process (``python -m pythagoras_p2p.execution.worker_main RFD WFD SLOTFD PARENT``).

A worker is a fresh interpreter: it never imports the user's ``__main__``. It reads batches of
tasks from its supervisor, loads each function once by the key of its record from the shared
store (with the versions of the user's modules the record lists: see :mod:`.functions`), runs
the call, and writes back outcomes and whatever the call printed. Before each task it writes the
task's id into a shared 8-byte page, so its supervisor can tell which call killed it.
Clouds used inside a worker run their calls inline, so nested ``sync_parallel`` never waits on
the workers it occupies.
"""

from __future__ import annotations

import io
import mmap
import os
import signal
import sys
import threading
import time

from ..defaults import WORKER_FLUSH_EVERY as _FLUSH_EVERY
from .worker_process import SLOT, VERIFY, VERIFY_MANY, FrameReader, send_frame


class _Channel:
    """The worker's pipe to its supervisor; a lock keeps frames of threads apart."""

    def __init__(self, rfd: int, wfd: int):
        self.rfd, self.wfd = rfd, wfd
        self.reader = FrameReader()
        self.pending: list = []
        self.lock = threading.Lock()

    def recv(self):
        while not self.pending:
            data = os.read(self.rfd, 1 << 20)
            if not data:
                return None
            self.pending.extend(self.reader.feed(data))
        return self.pending.pop(0)

    def send(self, message) -> None:
        with self.lock:
            send_frame(self.wfd, message)


class _Output(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` of a worker: text goes to the caller, line by line."""

    def __init__(self, channel: _Channel, where: str):
        self.channel, self.where = channel, where
        self.buf: list[str] = []
        self.task = -1  # the task whose output this is

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.buf.append(text)
        if "\n" in text:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self.buf:
            text = "".join(self.buf)
            self.buf.clear()
            self.channel.send(("out", self.where, text, self.task))


def _limit_memory() -> None:
    from ..defaults import worker_memory_limit

    limit = worker_memory_limit()  # checked by the pool before it started this worker
    if limit is not None:
        import resource

        # RLIMIT_DATA counts what the process allocates (heap and private mappings) but not the
        # store's shared memory map: with RLIMIT_AS, a map grown past the limit kept every worker
        # from starting.
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def _verify(address: bytes, payload: bytes, where: str, *, many: bool):
    """The outcome of a verification task (see ``WorkerPool.verify`` and ``verify_many``)."""
    from ..net.transfer import verify_file
    from .outcomes import Checked, failure_outcome

    try:
        if many:
            return _verify_many(payload)
        problem = verify_file(payload.decode(), address)
    except Exception as exc:
        return failure_outcome(exc, where)
    return Checked(()) if problem is None else Checked((0,), problem)


def _verify_many(payload: bytes):
    """Check values framed as (address, 8-byte length, packed bytes)...; the outcome lists the
    positions of those whose bytes do not have their address."""
    from ..identity.encoding import value_address
    from ..store.packing import unpack
    from .outcomes import Checked

    bad, view, offset, i = [], memoryview(payload), 0, -1
    while offset + 40 <= len(view):
        i += 1
        address = bytes(view[offset: offset + 32])
        size = int.from_bytes(view[offset + 32: offset + 40], "little")
        packed = view[offset + 40: offset + 40 + size]
        offset += 40 + size
        try:
            good = len(packed) == size and value_address(unpack(packed)) == address
        except Exception:  # what does not decode does not match
            good = False
        if not good:
            bad.append(i)
    return Checked(tuple(bad))


def _die_with(parent: int) -> None:
    """End this worker when its supervisor dies, even in the middle of a call (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the end of the pipe still stops the worker
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(0)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle
    rfd, wfd, slot_fd = (int(a) for a in argv[:3])
    if len(argv) > 3:
        _die_with(int(argv[3]))
    slot = mmap.mmap(slot_fd, SLOT.size)
    os.close(slot_fd)
    channel = _Channel(rfd, wfd)
    init = channel.recv()
    if init is None:
        return 0
    _, sys_path, home, label, cwd = init
    try:
        sys.path[:] = sys_path
        os.chdir(cwd)
        _limit_memory()
        from .context import enter_worker
        from .tasks import Task, current_where, run_task

        cloud = enter_worker(home)
        store = cloud.store
    except BaseException as exc:  # report why, then exit: the supervisor stops respawning
        channel.send(("fatal", f"{type(exc).__name__}: {exc}"))
        return 1
    where = current_where(label.split(":", 1)[1])
    sys.stdout = sys.stderr = _Output(channel, where)
    channel.send(("ready", os.getpid()))
    while True:
        message = channel.recv()
        if message is None or message[0] == "stop":
            break
        done: list = []
        last = time.monotonic()
        for seq, fp, call, payload, label, visible_gpus in message[1]:  # see RunEntry
            if visible_gpus is not None:  # on a machine with GPUs: only those given to this call
                os.environ["CUDA_VISIBLE_DEVICES"] = visible_gpus
            SLOT.pack_into(slot, 0, seq)
            sys.stdout.task = seq
            if fp == VERIFY or fp == VERIFY_MANY:
                outcome = _verify(call, payload, where, many=fp == VERIFY_MANY)
            else:  # fp: the key of the function's record
                outcome = run_task(Task(seq, fp, call, payload, label), where, store)
            SLOT.pack_into(slot, 0, -1)
            done.append((seq, outcome))
            now = time.monotonic()
            if now - last >= _FLUSH_EVERY:
                sys.stdout.flush()
                channel.send(("done", done))
                done, last = [], now
        sys.stdout.flush()
        if done:
            channel.send(("done", done))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
