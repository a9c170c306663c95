"""The values of a store by their address: records in the ``values`` table, files in ``blobs/``.

A value record (:mod:`.records`) keeps a checksum of the packed value, and either the value
(small ones) or a marker naming its file (:mod:`.blobs`); transient copies (arguments on their
way to workers and peers) are kept for this boot only, while some caller holds them
(:mod:`.holds`). Every value is checked when read: one whose bytes no longer match is logged,
removed, and counts as missing, so whoever wanted it computes it again.

:class:`Values` is one of the collaborators a :class:`~.core.Store` holds (``store.values``).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from blake3 import blake3

from ..defaults import INLINE_VALUE_LIMIT
from ..errors import StoreError, StoreFullError
from ..identity.encoding import Address
from . import blobs, room
from .env import StoreEnvironment, full_message
from .holds import Holds
from .packing import unpack
from .records import (
    INLINE,
    SUM,
    TRANSIENT,
    Damaged,
    checksum,
    file_record,
    inline_record,
    inline_value,
    live,
    stored_sum,
    sum_matches,
)
from .rows import put_value_record

__all__ = ["Values", "MISSING"]

log = logging.getLogger("pythagoras_p2p.store.core")  # the name its messages always had

_HOLDS_LOCK = threading.Lock()  # Values.holds is made once per store and process
#: How many verified files a process remembers (then it forgets them all and hashes again).
VERIFIED_KEPT = 4096


class _Missing:
    """Sentinel for "not in the store" (``None`` is a legitimate stored value)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


class Values:
    """The values of one store's environment (see the module docstring)."""

    def __init__(self, env: StoreEnvironment):
        self.env = env
        self._holds: Holds | None = None
        self._verified: set[tuple] = set()  # (file identity, checksum) of files hashed here

    def has(self, address: Address) -> bool:
        return self.value_record(address) is not None

    def get(self, address: Address) -> Any:
        """A stored value by its address, or :data:`MISSING`. Large values read the file in place."""
        record = self.value_record(address)
        return MISSING if record is None else self.decode(address, record)

    def value_record(self, address: Address) -> bytes | None:
        """The raw record of a stored value (see :meth:`inline_blob`), or None.

        A transient value counts while its file exists: :meth:`drop_transient` may remove it.
        """
        record = live(self.env.read(lambda txn: txn.get(address, db=self.env.values)))
        if record is not None and record[:1] == TRANSIENT and not self.record_path(address, record).exists():
            return None
        return record

    @staticmethod
    def inline_blob(record: bytes) -> bytes | None:
        """The packed value inside a record, or None when the value lives in its own file."""
        return inline_value(record)

    def packed(self, address: Address, record: bytes) -> memoryview | None:
        """The packed bytes of a value record (a large value's file mapped, not read), checked
        against the record's checksum; None if the value is gone, or was damaged (it is then
        logged and removed, so that whoever wanted it computes it again)."""
        try:
            return self.checked_view(address, record)
        except Damaged as exc:
            self._remove_damaged(address, record, str(exc))
            return None

    def checked_view(self, address: Address, record: bytes, *, always: bool = False) -> memoryview | None:
        """The packed bytes of a value record, or None if it is a transient copy dropped
        meanwhile; raises :class:`~.records.Damaged` when they do not match the record's
        checksum (and leaves the value alone: :meth:`packed` removes it).

        A file is hashed the first time this process reads it, and again only once it is
        another file (its identity: device, inode, size, times) or ``always`` (``cache
        verify``); media damage after that first read is found by ``cache verify`` (see
        :data:`VERIFIED_KEPT`)."""
        if record[:1] == INLINE:
            view = memoryview(record)[1 + SUM:]
            if not sum_matches(view, record):
                raise Damaged("its bytes do not match the checksum taken when it was stored")
            return view
        found = blobs.map_identified(self.env.blobs, address, record)
        if found is None:
            return None
        view, identity = found
        seen = (identity, stored_sum(record))
        if always or seen not in self._verified:
            if not sum_matches(view, record):
                raise Damaged("its bytes do not match the checksum taken when it was stored")
            if len(self._verified) >= VERIFIED_KEPT:
                self._verified.clear()
            self._verified.add(seen)
        return view

    def _remove_damaged(self, address: Address, record: bytes, why: str) -> None:
        """Remove a damaged value (unless it was rewritten meanwhile) and its files: every
        result that names it then counts as missing until it is stored again."""
        log.warning(
            "value %s in the store at %s is damaged (%s): it was removed and will be computed "
            "again; if this happens again, check the disk and run `pythagoras-node cache verify "
            "--repair`", address.hex(), self.env.path, why)

        def delete(txn):
            if txn.get(address, db=self.env.values) != record:
                return False
            room.forget_file(txn, self.env.info, self.env.blobs, address, record)
            txn.delete(address, db=self.env.values)
            return True

        try:
            if self.env.write(delete, admin=True):
                self.unlink_files(address, record)
        except StoreError as exc:  # it is not returned either way
            log.warning("could not remove damaged value %s: %s", address.hex(), exc)

    def adopt_file(self, address: Address, path: str | os.PathLike, *, durable: bool = True) -> None:
        """Store the packed value in file ``path`` (verified by the caller) under ``address``.

        Small values are copied into LMDB; large ones are renamed into ``blobs/``. The file is
        consumed either way.
        """
        path = Path(path)
        size = path.stat().st_size
        if size <= INLINE_VALUE_LIMIT:
            blob = path.read_bytes()
            path.unlink()
            self.put_value(address, blob)
            return
        if not durable:
            record = self.value_record(address)
            if record is not None and record[:1] != TRANSIENT:  # kept for good already
                path.unlink()
                return
        target = self.blob_path(address, transient=not durable)
        try:
            if self.new_file(address):
                self.env.check_room(size)
            sum_ = blobs.adopt(path, target, durable=durable)
        except OSError as exc:
            raise self._write_error(target, exc) from None
        except StoreFullError:
            path.unlink(missing_ok=True)
            raise
        record = file_record(address, sum_, durable)
        self.env.write(lambda txn: self.put_record(txn, address, record, size))

    def decode(self, address: Address, record: bytes) -> Any:
        if record[:1] == INLINE:  # the hit of a small result: checked here, with no call more
            inline = memoryview(record)[1 + SUM:]
            if blake3(inline).digest(SUM) == record[1:1 + SUM]:
                return unpack(inline)
        view = self.packed(address, record)  # mapped copy-on-write: writable, no copy made
        return MISSING if view is None else unpack(view, writable=not view.readonly)

    def blob_path(self, address: Address, *, transient: bool = False) -> Path:
        """The file of a large value: ``blobs/ab/abcd…``, with ``.n`` for a transient copy."""
        return blobs.blob_path(self.env.blobs, address, transient=transient)

    def record_path(self, address: Address, record: bytes) -> Path:
        """The file that holds the value of a (non-inline) record."""
        return blobs.record_path(self.env.blobs, address, record)

    def unlink_files(self, address: Address, record: bytes) -> None:
        """Remove the files of a deleted value record (see :func:`.blobs.unlink_files`)."""
        blobs.unlink_files(self.env.blobs, address, record)

    def put_value(self, address: Address, blob: bytes | list, *, durable: bool = True) -> None:
        """Store one packed value (bytes, or the parts :func:`pack_parts` gives) under its address.

        ``durable=False`` is for values kept only while this machine runs (arguments on their way
        to workers and peers): a large one's file is not fsynced, and after a reboot the value
        counts as absent. A durable write upgrades such a record.
        """
        record = self.make_record(address, blob, durable)
        if record is not None:
            size = room.nbytes(blob) if record[:1] != INLINE else 0
            self.env.write(lambda txn: self.put_record(txn, address, record, size))

    def durable_record(self, address: Address) -> bytes | None:
        """The record that makes a value stored here durable, if it is only a transient copy
        (an argument that also became a result); None if it is durable already or absent."""
        record = self.value_record(address)
        if record is None or record[:1] != TRANSIENT:
            return None
        if not self._write_blob_file(address, None, durable=True):
            return None  # its copy was dropped meanwhile: the result names an absent value
        return file_record(address, stored_sum(record), True)

    def _live_transient(self, address: Address) -> bool:
        """Whether a transient copy of this boot is here: its ``.n`` file is complete (one left
        by an earlier boot may be torn, and is never reused)."""
        record = self.value_record(address)
        return record is not None and record[:1] == TRANSIENT

    def make_record(self, address: Address, blob: bytes | list | None,
                    durable: bool = True, *, room_checked: bool = False) -> bytes | None:
        """The record of a packed value (its file written first, if it is large), or None."""
        if blob is None:
            return None
        parts = blob if isinstance(blob, list) else [blob]
        size = sum(memoryview(p).nbytes for p in parts)
        sum_ = checksum(parts)
        if size <= INLINE_VALUE_LIMIT:
            return inline_record(sum_, parts)
        if not room_checked and self.new_file(address):
            self.env.check_room(size)
        self._write_blob_file(address, parts, durable)
        return file_record(address, sum_, durable)

    def put_record(self, txn, address: Address, record: bytes, size: int) -> None:
        """Record one value in ``txn``; a file of ``size`` bytes counts if none named it yet."""
        if put_value_record(txn, self.env.values, address, record) and size:
            room.count(txn, self.env.info, size)

    def new_file(self, address: Address) -> bool:
        """Whether storing this large value writes a file (none of it is here yet)."""
        return not self.blob_path(address).exists() and not self._live_transient(address)

    def _write_blob_file(self, address: Address, parts: list | None, durable: bool = True) -> bool:
        """Write a large value's file (see :func:`.blobs.write_blob_file`); returns whether it
        is there."""
        try:
            return blobs.write_blob_file(self.env.blobs, address, parts, durable,
                                         lambda: self._live_transient(address))
        except OSError as exc:
            raise self._write_error(self.blob_path(address), exc) from None

    def _write_error(self, target: Path, exc: OSError) -> StoreError:
        if exc.errno == errno.ENOSPC:
            return StoreFullError(full_message(self.env, "the disk is full"))
        return StoreError(f"cannot write {target} ({exc}); check the disk and permissions")

    @property
    def holds(self) -> Holds:
        """Which transient copies this process's calls read (see :mod:`pythagoras_p2p.store.holds`)."""
        holds = self._holds
        if holds is None:
            with _HOLDS_LOCK:  # one per store and process, however many threads ask first
                holds = self._holds
                if holds is None:
                    holds = self._holds = Holds(self.env.path / "transient.lock")
        return holds

    def keep_transient(self, address: Address, make_parts) -> bool:
        """Have a copy of a large argument here for as long as this process's calls read it:
        hold it, and write it (``make_parts()``, kept for this boot only) if it is not here.
        True if it is held (:meth:`drop_transient` or :meth:`release_transient` ends that),
        False if the value is durable here and needs no hold."""
        self.holds.hold(address)
        try:
            record = self.value_record(address)
            if record is not None and record[:1] != TRANSIENT:
                self.holds.release(address)
                return False
            if record is None:
                self.put_value(address, make_parts(), durable=False)
        except BaseException:
            self.holds.release(address)
            raise
        return True

    def release_transient(self, addresses: Iterable[Address]) -> None:
        """This process's calls no longer read these copies; someone else may drop them."""
        for address in addresses:
            self.holds.release(address)

    def drop_transient(self, addresses: Iterable[Address]) -> int:
        """Let go of this process's holds on the transient copies (arguments on their way to
        workers) among ``addresses`` and remove those nobody else holds; durable values are
        never touched. Returns how many were removed."""
        holds = self.holds
        dropped: list[Address] = []

        def write(txn):
            for address in wanted:
                record = txn.get(address, db=self.env.values)
                if record is not None and record[:1] == TRANSIENT:
                    room.forget_file(txn, self.env.info, self.env.blobs, address, record)
                    txn.delete(address, db=self.env.values)
                    dropped.append(address)

        with holds.taking([a for a in addresses if holds.release(a)]) as wanted:
            if wanted:
                self.env.write(write)
            for address in dropped:
                self.blob_path(address, transient=True).unlink(missing_ok=True)
        return len(dropped)
