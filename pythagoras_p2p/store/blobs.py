"""The files of large values under ``home/blobs``: their names, writing one durably, mapping one.

A value larger than :data:`~pythagoras_p2p.defaults.INLINE_VALUE_LIMIT` is the file
``blobs/ab/<address>``, written once (temporary name, fdatasync, rename, directory fsync) before
the transaction that records it commits, and never modified, so a reader can map it for as long
as it likes. A reader maps it privately, copy-on-write: the arrays it gets are writable like
those of a miss, a page is copied only when it is written, and a write never reaches the file
(nor any other reader). A transient copy (an argument, kept for this boot only) is ``<address>.n`` beside
it, written without fsync, so that dropping it never touches a durable file. Temporary files
start with a dot.

These functions do file I/O only and raise :class:`OSError` as it comes (the store turns it into
a :class:`~pythagoras_p2p.errors.StoreError`); which records name the files is :mod:`.records`.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import StoreError
from .records import INLINE, TRANSIENT, Damaged, checksum

__all__ = [
    "blob_path", "record_path", "unlink_files", "map_blob", "map_identified", "map_private", "write_blob_file", "adopt",
    "write_new_file", "fsync_dir", "blob_files",
]


def blob_path(root: Path, address: bytes, *, transient: bool = False) -> Path:
    """The file of a large value: ``blobs/ab/abcd…``, with ``.n`` for a transient copy."""
    name = address.hex()
    return root / name[:2] / (name + ".n" if transient else name)


def record_path(root: Path, address: bytes, record: bytes) -> Path:
    """The file that holds the value of a (non-inline) record."""
    if record[:1] == TRANSIENT:
        path = blob_path(root, address, transient=True)
        if path.exists() or not blob_path(root, address).exists():
            return path
    return blob_path(root, address)  # durable, or transient in the layout of release 0.1.0


def unlink_files(root: Path, address: bytes, record: bytes) -> None:
    """Remove the files of a deleted value record: a transient one's ``.n`` copy only (its
    durable name may have been linked meanwhile by a writer about to record it), a durable
    one's both names."""
    if record[:1] == INLINE:
        return
    for transient in (False, True) if record[:1] != TRANSIENT else (True,):
        blob_path(root, address, transient=transient).unlink(missing_ok=True)


def map_blob(root: Path, address: bytes, record: bytes) -> memoryview | None:
    """A large value's file, mapped privately (see :func:`map_private`); None if it is a
    transient copy dropped meanwhile. Raises :class:`~.records.Damaged` if a durable file is
    missing or empty."""
    found = map_identified(root, address, record)
    return None if found is None else found[0]


def map_identified(root: Path, address: bytes, record: bytes) -> tuple[memoryview, tuple] | None:
    """:func:`map_blob`, and the identity of the file mapped (device, inode, size, modification
    and change times): what a file verified once is known by."""
    try:
        with open(record_path(root, address, record), "rb") as f:
            st = os.fstat(f.fileno())
            identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            return memoryview(map_private(f.fileno())), identity
    except FileNotFoundError:
        if record[:1] == TRANSIENT:
            return None
        raise Damaged("its file is missing") from None
    except ValueError:  # mmap refuses an empty file
        raise Damaged("its file is empty") from None
    except OSError as exc:
        raise StoreError(
            f"value {address.hex()[:16]} is recorded but its file cannot be read ({exc}); "
            f"check the permissions of {root}"
        ) from None


def map_private(fd: int) -> mmap.mmap:
    """The whole file ``fd`` mapped copy-on-write (``MAP_PRIVATE``): writable, costing nothing
    until a page is written, and never writing to the file. Where the kernel refuses to promise
    that much memory (strict overcommit, a file larger than memory and swap), mapped read-only."""
    try:
        return mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
    except OSError as exc:
        if exc.errno != errno.ENOMEM:
            raise
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)


def write_blob_file(root: Path, address: bytes, parts: list | None, durable: bool,
                    live_transient: Callable[[], bool]) -> bool:
    """Write a large value's file: durable ones fsynced under their address, transient ones
    (not fsynced) beside it with ``.n``. A durable write over a transient copy of this boot
    (``live_transient()``: its record is here, so its file is complete) hard-links it instead
    of rewriting. With no ``parts``, only such a copy can be made durable; returns whether the
    file is there. On an error, this process's temporary files of it are removed."""
    target = blob_path(root, address)
    transient = blob_path(root, address, transient=True)
    try:
        target.parent.mkdir(exist_ok=True)
        if not durable:
            if not (target.exists() or live_transient()):
                if parts is None:
                    raise ValueError("a transient copy of a large value needs its parts")
                write_new_file(transient, parts, durable=False)
            return True
        if not target.exists():
            try:
                if not live_transient():
                    raise FileNotFoundError(transient)  # absent, or left by an earlier boot
                os.link(transient, target)
            except FileExistsError:
                pass
            except FileNotFoundError:
                if parts is None:
                    return False
                write_new_file(target, parts, durable=True)
                return True
        with open(target, "rb") as f:  # written earlier as a transient copy, perhaps
            os.fdatasync(f.fileno())
        fsync_dir(target.parent)
        return True
    except OSError:
        for stray in target.parent.glob(f".{target.name}*.{os.getpid()}.*.tmp"):
            stray.unlink(missing_ok=True)
        raise


def adopt(path: Path, target: Path, *, durable: bool) -> bytes:
    """Move the finished file ``path`` to ``target`` (synced first if ``durable``) and return
    the checksum of its bytes; ``path`` is removed on an error too."""
    try:
        target.parent.mkdir(exist_ok=True)
        with open(path, "rb") as f:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
                sum_ = checksum([view])
            if durable:
                os.fdatasync(f.fileno())
        os.replace(path, target)
        if durable:
            fsync_dir(target.parent)  # the name too survives a power cut before the commit
    except OSError:
        path.unlink(missing_ok=True)
        raise
    return sum_


def write_new_file(path: Path, parts: list, *, durable: bool) -> None:
    """Write ``parts`` to a temporary name beside ``path`` and rename it (synced if ``durable``)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        for part in parts:
            f.write(part)
        f.flush()
        if durable:
            os.fdatasync(f.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def blob_files(root: Path) -> Iterator[tuple[Path, bytes | None]]:
    """Every blob file as (path, address), with None for a temporary file."""
    if not root.is_dir():
        return
    for sub in root.iterdir():
        if not sub.is_dir():
            if sub.name.startswith("."):  # a download a killed client left behind
                yield sub, None
            continue
        for path in sub.iterdir():
            name = path.name
            if name.startswith("."):
                yield path, None
            else:
                try:
                    yield path, bytes.fromhex(name.removesuffix(".n"))
                except ValueError:
                    yield path, None
