"""The room value files take under the store's cap (``PYTHAGORAS_STORE_MAX_SIZE``).

The cap covers LMDB and the files of large values in ``blobs/`` together. LMDB knows its own
size (its pages in use); the bytes of the files are a counter in the ``info`` database, changed
in the very transaction that adds the first record naming a file, or deletes one. Write
transactions are serialized across processes, so the counter is exact whoever writes; it is
made once, by listing the records, for a store written before it existed.

A new file is admitted only while LMDB's pages, the files and it fit below the cap less the
headroom kept for ``cache gc`` (:meth:`~.core.Store._check_room`); the map grows only while it
and the files do. Writers that check at the same moment may each see room for their own file:
the cap can be passed by what they write at once, never by more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from ..defaults import INLINE_VALUE_LIMIT
from .blobs import record_path
from .records import INLINE

__all__ = ["FILE_BYTES", "file_bytes", "count", "file_size", "forget_file", "count_files",
           "nbytes", "new_files"]

FILE_BYTES = b"file_bytes"  # the key of the counter in the ``info`` database
_FORMAT_1_INLINE = b"i"  # a record of store format 1 that holds its value (no file)


def file_bytes(txn, info_db) -> int | None:
    """The bytes of the store's value files, or None if this store has no counter yet."""
    raw = txn.get(FILE_BYTES, db=info_db)
    return None if raw is None else int(raw)


def count(txn, info_db, delta: int) -> None:
    """Add ``delta`` bytes (negative: removed) to the counter, in ``txn``."""
    if delta:
        now = file_bytes(txn, info_db) or 0
        txn.put(FILE_BYTES, str(max(0, now + delta)).encode(), db=info_db)


def file_size(root: Path, address: bytes, record: bytes) -> int:
    """The bytes on disk of the file a value record names (0 for an inline record, or a file
    that is gone)."""
    if record[:1] in (INLINE, _FORMAT_1_INLINE):
        return 0
    try:
        return record_path(root, address, record).stat().st_size
    except OSError:
        return 0


def forget_file(txn, info_db, root: Path, address: bytes, record: bytes) -> None:
    """Count out the file of a value record ``txn`` deletes (before its file is unlinked)."""
    count(txn, info_db, -file_size(root, address, record))


def count_files(txn, values_db, info_db, root: Path) -> int:
    """Make the counter from the records (a store written before it existed): every file a
    record names, whatever its format or boot, since each is on disk until ``cache gc``."""
    total = sum(file_size(root, address, record) for address, record in txn.cursor(db=values_db))
    txn.put(FILE_BYTES, str(total).encode(), db=info_db)
    return total


def nbytes(blob: bytes | list) -> int:
    """The size of a packed value given as bytes or as its parts."""
    return len(blob) if isinstance(blob, bytes) else sum(memoryview(p).nbytes for p in blob)


def new_files(values: Iterable[tuple[bytes, bytes | list | None]],
              is_new: Callable[[bytes], bool]) -> dict[bytes, int]:
    """The bytes of each large packed value among ``(address, packed or None)`` whose file
    ``is_new(address)`` says is not here yet: what storing them adds."""
    sizes: dict[bytes, int] = {}
    for address, blob in values:
        if blob is not None and address not in sizes:
            size = nbytes(blob)
            if size > INLINE_VALUE_LIMIT and is_new(address):
                sizes[address] = size
    return sizes
