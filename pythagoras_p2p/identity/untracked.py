"""Functions whose calls record no inputs (``add_pure_function(track_inputs=False)``): see
:mod:`.inputs`, which exports these names too."""

from __future__ import annotations

from blake3 import blake3

__all__ = ["Untracked", "untracked", "untracked_fingerprint"]


class Untracked:
    """A function whose calls record nothing (``add_pure_function(track_inputs=False)``), as a
    worker loads it from the function's record."""

    __slots__ = ("func", "__qualname__")

    def __init__(self, func):
        self.func = func
        self.__qualname__ = func.__qualname__

    def __call__(self, **kwargs):
        return self.func(**kwargs)


def untracked(func) -> Untracked:
    return func if type(func) is Untracked else Untracked(func)


def untracked_fingerprint(fp: bytes) -> bytes:
    """The fingerprint of a function whose inputs are not tracked, made from its own: its
    results (which keep no trace) are never answered for the tracked function, nor the other
    way round."""
    return blake3(b"pythagoras-untracked-1\0" + fp).digest()
