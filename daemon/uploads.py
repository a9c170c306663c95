"""A node's value traffic: chunks of stored values sent, and argument uploads received and checked.

A part of :class:`~.handlers.Handlers` (held as ``handlers.values``). An upload arrives in bounded chunks,
each written into a file of its own under ``HOME/incoming``; once complete it is checked by a
worker against its address before the store adopts it (a transient copy, for the calls that
read it). Uploads a sender abandoned are dropped after ``NODE_UPLOAD_IDLE`` seconds; at most
``NODE_MAX_UPLOADS`` are in progress at once.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pythagoras_p2p.defaults import NODE_MAX_UPLOADS as _MAX_UPLOADS
from pythagoras_p2p.defaults import NODE_MAX_VALUE as _MAX_VALUE
from pythagoras_p2p.defaults import NODE_UPLOAD_IDLE as _UPLOAD_IDLE
from pythagoras_p2p.net import wire
from pythagoras_p2p.net.transfer import value_chunk
from pythagoras_p2p.store.core import Store

from .logonce import LogOnce
from .outbox import Outbox
from .state import Counters

__all__ = ["Upload", "Values", "ValueChecks"]


@dataclass(eq=False)
class Upload:
    path: str
    fd: int  # -1 once complete: a worker checks it
    total: int
    received: int = 0
    waiter: tuple[bytes, int] | None = None  # (routing id, request id) of its last chunk
    touched: float = field(default_factory=time.monotonic)
    key: tuple = ()  # (sender, address)
    after: list = field(default_factory=list)  # callbacks(ok) once it is checked

    def discard(self) -> None:
        """Close and remove its file (what is left of it)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        Path(self.path).unlink(missing_ok=True)


class ValueChecks(Protocol):
    """How a received value is checked against its address (by the node's checker process)."""

    def check_value(self, address: bytes, path: str, done: Callable[[bool, str], None]) -> None:
        """Check the packed value in the file ``path``; ``done(ok, reason)`` runs on the node's
        thread."""


class Values:
    """Serving ``get`` and ``put``: the value traffic of a node's :class:`~.handlers.Handlers`."""

    def __init__(self, node_id: str, store: Store, outbox: Outbox, checks: ValueChecks,
                 counts: Counters, log_once: LogOnce, incoming: Path):
        self.node_id = node_id
        self.store = store
        self.outbox = outbox
        self.checks = checks
        self.counts = counts
        self.log_once = log_once
        self.uploads: dict[tuple[bytes, bytes], Upload] = {}  # (sender, address) -> Upload
        self._upload_ids = itertools.count()
        self.incoming = incoming  # where uploads are written (emptied of a previous run's here)
        self.incoming.mkdir(exist_ok=True)
        for stale in self.incoming.iterdir():
            stale.unlink(missing_ok=True)

    def on_get(self, ident: bytes, msg: wire.Message) -> None:
        address, offset = msg.hex("address"), msg.fields["offset"]
        try:
            found = value_chunk(self.store, address, offset)
        except Exception as exc:  # unreadable here: the download fails now rather than waits
            self.log_once(f"get:{type(exc).__name__}", "cannot read value %s: %r", address.hex()[:16], exc)
            found = None
        if found is None:
            self.outbox.error(ident, msg.id, wire.ERR_MISSING, address.hex())
            return
        chunk, total = found
        self.outbox.send(ident, wire.build("ok", msg.id, [chunk], address=address, offset=offset, total=total))

    def on_put(self, ident: bytes, msg: wire.Message) -> None:
        address, offset, total = msg.hex("address"), msg.fields["offset"], msg.fields["total"]
        if len(msg.bodies) != 1:
            self.outbox.error(ident, msg.id, wire.ERR_MALFORMED, "put: expected one body frame")
            return
        chunk = msg.bodies[0]
        if total > _MAX_VALUE or offset + len(chunk) > total or len(chunk) > wire.CHUNK:
            self.outbox.error(ident, msg.id, wire.ERR_MALFORMED, "put: chunk outside the declared size")
            return
        final = offset + len(chunk) == total
        self.counts.value_bytes_received += len(chunk)
        key = (ident, address)
        upload = self.uploads.get(key)
        if upload is None:
            if self.store.has_value(address):
                if final:
                    self.outbox.send(ident, wire.build("ok", msg.id, address=address))
                return
            if len(self.uploads) >= _MAX_UPLOADS:
                self.drop_abandoned_uploads()
            if len(self.uploads) >= _MAX_UPLOADS:
                self.outbox.error(ident, msg.id, wire.ERR_BUSY, "too many uploads in progress; retry later")
                return
            # A file of its own: a check of an earlier upload never reads this one's bytes.
            path = str(self.incoming / f"{address.hex()}.{ident.hex()}.{next(self._upload_ids)}.part")
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            upload = self.uploads[key] = Upload(path, fd, total, key=key)
        if upload.fd < 0:  # complete, and being checked: it can no longer change
            self.outbox.error(ident, msg.id, wire.ERR_BUSY, f"value {address.hex()[:16]} is being checked; "
                              f"wait for the answer to its last chunk")
            return
        if upload.total != total:
            self.drop_upload(key)
            self.outbox.error(ident, msg.id, wire.ERR_MALFORMED, "put: total changed during an upload")
            return
        os.pwrite(upload.fd, chunk, offset)
        upload.received += len(chunk)
        upload.touched = time.monotonic()
        if not final:
            return
        if upload.received != total:
            self.drop_upload(key)
            self.outbox.error(ident, msg.id, wire.ERR_MALFORMED, "put: chunks do not cover the value")
            return
        os.close(upload.fd)
        upload.fd = -1
        upload.waiter = (ident, msg.id)
        self.checks.check_value(address, upload.path,
                                lambda ok, reason: self.verified(upload, ok, reason))

    def verified(self, upload: Upload, ok: bool, reason: str) -> None:
        if self.uploads.get(upload.key) is not upload:  # dropped meanwhile (its sender left)
            upload.discard()
            for then in upload.after:
                then(False)
            return
        try:
            self._keep_upload(upload, ok, reason)
        finally:
            for then in upload.after:  # copies of results waiting for their large value
                then(ok and self.store.has_value(upload.key[1]))

    def _keep_upload(self, upload: Upload, ok: bool, reason: str) -> None:
        del self.uploads[upload.key]
        assert upload.waiter is not None  # set with its last chunk, before it was checked
        ident, request_id = upload.waiter
        address = upload.key[1]
        if ok:
            try:
                self.store.adopt_file(address, upload.path, durable=False)  # an argument: cache only
            except Exception as exc:  # the store is full: say so, keep nothing half-adopted
                upload.discard()
                self.log_once(f"adopt:{type(exc).__name__}", "cannot keep a received value: %s", exc)
                self.outbox.error(ident, request_id, wire.ERR_STORE, f"node {self.node_id} cannot keep value "
                                  f"{address.hex()[:16]}: {exc}")
                return
            self.counts.values_received += 1
            self.outbox.send(ident, wire.build("ok", request_id, address=address))
        else:
            upload.discard()
            self.log_once(f"tampered:{ident.hex()}", "rejected value %s: %s", address.hex()[:16], reason)
            self.outbox.error(ident, request_id, wire.ERR_TAMPERED, f"value {address.hex()[:16]} rejected: {reason}")

    def drop_abandoned_uploads(self) -> None:
        """Forget partial uploads whose sender went quiet (it crashed or was interrupted)."""
        now = time.monotonic()
        for key, upload in list(self.uploads.items()):
            if upload.fd >= 0 and now - upload.touched > _UPLOAD_IDLE:
                self.drop_upload(key)

    def drop_upload(self, key: tuple) -> None:
        upload = self.uploads.pop(key, None)
        if upload is not None:
            upload.discard()
            for then in upload.after:
                then(False)
            upload.after.clear()
