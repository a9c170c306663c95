"""Moving stored values between machines in bounded chunks, verified on arrival.

A value travels as :data:`wire.CHUNK`-sized pieces, so the sockets' message cap stays modest
while 100 MiB arguments pass. The receiver writes the pieces to a temporary file, and the value
enters its store only after the file, unpickled, hashes to the address it was sent under.
"""

from __future__ import annotations

import itertools
import mmap
import os
from typing import Any

from ..errors import StoreError
from ..identity.encoding import value_address
from ..store.core import Store
from ..store.packing import unpack
from . import wire

__all__ = ["value_view", "value_chunk", "upload_frames", "verify_file", "Download", "Lost"]


class Lost(str):
    """Why a download failed when the reason is its peer's loss: the value may be elsewhere."""


def _stored(store: Store, address: bytes) -> bytes | str | None:
    """A stored value's packed bytes if kept inline (checked), else the path of its file (the
    receiver checks what arrives); None if absent or damaged."""
    record = store.value_record(address)
    if record is None:
        return None
    if store.inline_blob(record) is None:
        return str(store.record_path(address, record))
    view = store.packed(address, record)
    return None if view is None else bytes(view)


def value_view(store: Store, address: bytes) -> memoryview | None:
    """The packed bytes of a stored value (a large one mapped from its file, not read), checked
    against the store's checksum so that known-bad data is never sent; None if absent."""
    record = store.value_record(address)
    return None if record is None else store.packed(address, record)


def value_chunk(store: Store, address: bytes, offset: int) -> tuple[bytes, int] | None:
    """One chunk of a stored value's packed bytes from ``offset``, and their total size; None
    if it is not stored. Read, not mapped: a map would keep a descriptor open until the chunk
    has been sent, and a peer that asks for many chunks would use up the process's descriptors."""
    found = _stored(store, address)
    if found is None:
        return None
    if isinstance(found, bytes):
        return found[offset: offset + wire.CHUNK], len(found)
    try:
        fd = os.open(found, os.O_RDONLY)
    except FileNotFoundError:  # dropped meanwhile
        return None
    try:
        return os.pread(fd, wire.CHUNK, offset), os.fstat(fd).st_size
    finally:
        os.close(fd)


def upload_frames(store: Store, address: bytes) -> list[tuple[int, int, Any]] | None:
    """The chunks of a stored value as (offset, total, bytes), or None if it is not stored."""
    view = value_view(store, address)
    if view is None:
        return None
    total = len(view)
    return [(offset, total, view[offset: offset + wire.CHUNK])
            for offset in range(0, max(total, 1), wire.CHUNK)]


def verify_file(path: str, address: bytes) -> str | None:
    """None if the packed value in ``path`` has content address ``address``, else the reason."""
    problem = None
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return "empty value"
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
                try:
                    value = unpack(memoryview(view), writable=False)
                    actual = value_address(value)
                    del value
                except Exception as exc:  # said here: its traceback holds views of the map
                    problem = f"it does not decode ({type(exc).__name__}: {exc})"
    except Exception as exc:
        return f"it cannot be read ({type(exc).__name__}: {exc})"
    if problem is not None:
        return problem
    if actual != address:
        return f"its content has address {actual.hex()[:16]}, not {address.hex()[:16]}"
    return None


_downloads = itertools.count()


class Download:
    """One value arriving in chunks from one peer."""

    def __init__(self, store: Store, address: bytes):
        self.store = store
        self.address = address
        self.total: int | None = None
        self.received = 0
        self.waiters: list = []
        # One file per download: two downloads of one value (from two peers) never share it.
        self.path = str(store.blobs / f".{address.hex()}.{os.getpid()}.{next(_downloads)}.download")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)

    @property
    def complete(self) -> bool:
        return self.total is not None and self.received >= self.total

    def write(self, offset: int, total: int, chunk: Any) -> None:
        if self.total is None:
            self.total = total
        os.pwrite(self.fd, chunk, offset)
        self.received += len(chunk)

    def finish(self) -> None:
        os.close(self.fd)
        self.fd = -1
        problem = verify_file(self.path, self.address)
        if problem is None:
            try:
                self.store.adopt_file(self.address, self.path)  # consumed even when refused
                result: Any = True
            except StoreError as exc:  # no room below the cap, or the disk: said to whoever waits
                result = f"value {self.address.hex()[:16]} cannot be kept here: {exc}"
        else:
            os.unlink(self.path)
            result = f"value {self.address.hex()[:16]} arrived damaged: {problem}"
        for waiter in self.waiters:
            waiter(result)

    def fail(self, reason: str, *, lost: bool = False) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            os.unlink(self.path)
        except OSError:
            pass
        for waiter in self.waiters:
            waiter(Lost(reason) if lost else reason)
