"""structlog set-up: one JSON event per line on stderr, with a stable event name.

Every line is JSON, the standard library's records too (asyncio, asyncssh, uvicorn): they go
through the same renderer. Repeated warnings and errors of one kind are rate-limited: a hub
out of file descriptors once had asyncio write 3.7 million tracebacks (1.5 GB) in minutes.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

BURST = 20  # records of one kind let through per window
WINDOW_S = 10.0
_LOUD = {"warning", "error", "critical", "exception"}


@dataclass(slots=True)
class _Kind:
    start: float
    passed: int = 0
    dropped: int = 0


class RateLimit:
    """The first `burst` records of one kind per `window` seconds pass; the rest are counted,
    and the next one to pass says how many were dropped."""

    def __init__(
        self,
        burst: int = BURST,
        window: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst, self.window, self.clock = burst, window, clock
        self._kinds: dict[tuple[str, ...], _Kind] = {}
        self._lock = threading.Lock()  # records come from worker threads too

    def allow(self, key: tuple[str, ...]) -> tuple[bool, int]:
        """Whether this record passes, and how many of its kind were dropped before it."""
        now = self.clock()
        with self._lock:
            if len(self._kinds) > 10_000:  # kinds are few; never let the table grow unbounded
                self._kinds.clear()
            kind = self._kinds.setdefault(key, _Kind(now))
            if now - kind.start >= self.window:
                kind.start, kind.passed = now, 0
            if kind.passed >= self.burst:
                kind.dropped += 1
                return False, 0
            kind.passed += 1
            dropped, kind.dropped = kind.dropped, 0
            return True, dropped


def rate_limited(limit: RateLimit) -> Processor:
    def process(_: WrappedLogger, method: str, event: EventDict) -> EventDict:
        if method not in _LOUD:
            return event
        kind = (str(event.get("logger", "")), str(event.get("event")), method)
        allowed, dropped = limit.allow(kind)
        if not allowed:
            raise structlog.DropEvent
        if dropped:
            event["suppressed"] = dropped
        return event

    return process


class _StdlibRateLimit(logging.Filter):
    def __init__(self, limit: RateLimit) -> None:
        super().__init__()
        self.limit = limit

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        allowed, dropped = self.limit.allow((record.name, str(record.msg), record.levelname))
        if dropped:
            record.suppressed = dropped
        return allowed


def _stdlib_extras(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    record = event.get("_record")
    suppressed = getattr(record, "suppressed", 0) if record is not None else 0
    if suppressed:
        event["suppressed"] = suppressed
    return event


def configure_logging(level: str = "INFO", node: str | None = None) -> None:
    """`node`: this node's id, on every line (several nodes share one database)."""
    limit = RateLimit()
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        *([_with_node(node)] if node else []),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_StdlibRateLimit(limit))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, _stdlib_extras],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(ensure_ascii=False),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # store.schema logs its upgrades
    structlog.configure(
        processors=[
            *shared,
            rate_limited(limit),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=True,
    )


def _with_node(node: str) -> Processor:
    def add(_logger: object, _method: str, event: EventDict) -> EventDict:
        event.setdefault("node", node)
        return event

    return add


__all__ = ["RateLimit", "configure_logging", "rate_limited"]
