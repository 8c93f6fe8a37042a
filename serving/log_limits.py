"""At most one traceback per kind of failure per interval in the service's logs.

An outage turns every request into the same exception: 7,715 identical tracebacks (30 MB in
27 s) drown the one line that matters and fill disks. :class:`RepeatedErrorFilter` lets the
first record of a kind (logger, message, exception type) through with its traceback, drops
the repeats for ``interval_s``, and notes how many were dropped on the next one it lets through.
"""

from __future__ import annotations

import logging
import threading
import time

INTERVAL_S = 30.0
# Loggers that report request failures: ours, and BentoML's "Exception on <path>" handlers.
REQUEST_ERROR_LOGGERS = ("lookalike.serving", "serving.core", "bentoml._internal.server.http_app", "bentoml.serve")


class RepeatedErrorFilter(logging.Filter):
    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str, str], float] = {}
        self._dropped: dict[tuple[str, str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        exc_type = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        key = (record.name, str(record.msg), exc_type)
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -self.interval_s) < self.interval_s:
                self._dropped[key] = self._dropped.get(key, 0) + 1
                return False
            self._last[key] = now
            dropped = self._dropped.pop(key, 0)
        if dropped:
            record.msg = f"{record.msg} ({dropped} identical record(s) suppressed in the last {self.interval_s:.0f}s)"
        return True


_installed = RepeatedErrorFilter()


def install(loggers: tuple[str, ...] = REQUEST_ERROR_LOGGERS) -> RepeatedErrorFilter:
    """Attach the shared filter to ``loggers`` (idempotent)."""
    for name in loggers:
        logger = logging.getLogger(name)
        if _installed not in logger.filters:
            logger.addFilter(_installed)
    return _installed
