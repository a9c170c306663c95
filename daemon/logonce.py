"""Logging each problem once: a bounded table of what a node has already said.

Peers choose what they send, so the keys of the problems they cause are theirs too: the table
forgets the oldest key past ``size`` entries rather than grow without bound.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

__all__ = ["LogOnce"]


class LogOnce:
    """``log_once(key, message, *args)`` logs a warning unless one was logged for ``key``."""

    def __init__(self, logger: logging.Logger, size: int):
        self.logger = logger
        self.size = size
        self._logged: OrderedDict[str, None] = OrderedDict()

    def __call__(self, key: str, message: str, *args: Any) -> None:
        if key in self._logged:
            return
        self._logged[key] = None
        if len(self._logged) > self.size:
            self._logged.popitem(last=False)
        self.logger.warning(message, *args)
