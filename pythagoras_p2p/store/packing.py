"""How values are packed for storage and transport: pickle protocol 5, large buffers out of band.

A value's *address* is made elsewhere (:mod:`pythagoras_p2p.identity.encoding`, from a canonical
encoding of its content); its *packed form* is what the store keeps and what travels. A large
value keeps its buffers after the pickle stream, 64-byte aligned, so that it can be read back
straight from a memory map without a copy.

A value read back behaves like the value that was stored: its arrays are writable. From a
private (copy-on-write) map, as the store gives, that costs nothing until a page is written;
from read-only bytes (a value that arrived in a message), its large buffers are copied.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

from ..errors import SerializationError

__all__ = ["pack", "pack_parts", "unpack", "INBAND"]

_PICKLE_PROTOCOL = 5
_pack_Q = struct.Struct("<Q").pack

_MAGIC_INBAND = b"P"
INBAND = _MAGIC_INBAND  # the first byte of a value packed with no out-of-band buffer
_MAGIC_OOB = b"Q"
_ALIGN = 64


def pack(obj: Any, *, what: str = "value", out_of_band_from: int = 256 * 1024) -> bytes:
    """:func:`pack_parts` joined into one ``bytes``."""
    parts = pack_parts(obj, what=what, out_of_band_from=out_of_band_from)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def pack_parts(obj: Any, *, what: str = "value", out_of_band_from: int = 256 * 1024) -> list:
    """Pickle ``obj`` for storage or transport.

    When its buffers (numpy arrays, PickleBuffers) add up to ``out_of_band_from`` bytes or more,
    they are laid out after the pickle stream, 64-byte aligned, so that :func:`unpack` on a
    memory map gives arrays that read the map in place. Smaller values are pickled in band and
    come back as ordinary objects.
    """
    buffers: list[pickle.PickleBuffer] = []
    try:
        data = pickle.dumps(obj, protocol=_PICKLE_PROTOCOL, buffer_callback=buffers.append)
        raws = [b.raw() for b in buffers]
        if raws and sum(r.nbytes for r in raws) < out_of_band_from:
            raws = []
            data = pickle.dumps(obj, protocol=_PICKLE_PROTOCOL)
    except Exception as exc:
        raise SerializationError(
            f"the {what} (type {type(obj).__qualname__}) cannot be pickled "
            f"({type(exc).__name__}: {exc}); use plain data, numpy or pandas objects, "
            f"or a picklable class"
        ) from None
    if not raws:
        return [_MAGIC_INBAND + data]
    header = bytearray(_MAGIC_OOB)
    header += struct.pack("<IQ", len(raws), len(data))
    for raw in raws:
        header += _pack_Q(raw.nbytes)
    parts: list[bytes | memoryview] = [bytes(header), data]
    offset = len(header) + len(data)
    for raw in raws:
        pad = -offset % _ALIGN
        parts.append(b"\0" * pad)
        parts.append(raw)
        offset += pad + raw.nbytes
    return parts


def unpack(blob: Any, *, writable: bool = True) -> Any:
    """Rebuild a value packed by :func:`pack`; out-of-band buffers are used in place.

    A writable ``blob`` (a private map of a store file) gives writable arrays. A read-only one
    has its buffers copied, so that they are writable too, unless ``writable=False`` (the value
    is only looked at, or is too large to copy)."""
    view = memoryview(blob)
    magic = bytes(view[:1])
    if magic == _MAGIC_INBAND:
        return pickle.loads(view[1:])
    if magic != _MAGIC_OOB:
        raise SerializationError("stored value has an unknown format; run `pythagoras-node cache verify`")
    count, plen = struct.unpack_from("<IQ", view, 1)
    sizes = struct.unpack_from(f"<{count}Q", view, 13)
    offset = 13 + 8 * count
    data = view[offset : offset + plen]
    offset += plen
    copy = writable and view.readonly
    buffers: list = []
    for size in sizes:
        offset += -offset % _ALIGN
        buffer = view[offset : offset + size]
        buffers.append(bytearray(buffer) if copy else buffer)
        offset += size
    return pickle.loads(data, buffers=buffers)
