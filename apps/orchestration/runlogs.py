"""Per-run logs: the lines a run's execution logs, kept with the run.

While the engine executes a run, a ``RunLogBuffer`` is attached to every
logger that writes lines (the root and each logger that does not pass its
records up): it keeps, in memory, the records emitted on the engine's own
thread for that run (the run's context, apps/logcontext.py, or a record's
own ``run_id``), scrubbed of secrets, as plain text. The engine hands the
buffered lines to its fenced writes (``Lease.write(log_lines=...)``) at each
node boundary and at the run's end, so they cost no statement of their own
and a process that lost the run writes none of them.

Where a write of the lines costs a statement of its own (SQLite), a run
writes them at its end, and at a node boundary only once it has gone on
for LIVE_AFTER_SECONDS: a short run costs one statement more, a long one
(which someone may follow) shows its lines as its nodes end.

Lines from other threads (the heartbeat's, a node's own threads) are not
kept: they interleave with nothing the run page can place. A run keeps at
most RUN_LOG_MAX_LINES lines; the ones past it are counted, and the run's
end adds one marker line saying how many were not kept.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from django.conf import settings
from django.db.models import Max

from apps import logcontext
from apps.orchestration.models import RunLogLine
from apps.secrets import scrub

logger = logging.getLogger("apps.orchestration.runlogs")

# A single line longer than this is cut: one runaway message must not make a row of megabytes.
LINE_MAX_CHARS = 10_000

# A line as the buffer keeps it and the run store writes it:
# (seq, logged_at, level, logger, node_id, message).
LogLine = tuple[int, datetime, str, str, str, str]

_TRACEBACKS = logging.Formatter()

# See the module's docstring.
LIVE_AFTER_SECONDS = 2.0


def run_log_next_seq(*, run_id: int, resumed: bool) -> int:
    """The seq of the first line a claim of run ``run_id`` keeps: after the lines of
    the processes that held it before (a takeover, ``resumed``, reads them once);
    1 for a run taken from the queue, which has none (no query)."""
    if not resumed:
        return 1
    last = RunLogLine.objects.filter(run_id=run_id).aggregate(last=Max("seq"))["last"]
    return (last or 0) + 1


def marker_text(dropped: int, limit: int) -> str:
    """The marker line's message for ``dropped`` lines not kept under a bound of ``limit``."""
    return f"… {dropped} more line{'s' if dropped != 1 else ''} not kept (RUN_LOG_MAX_LINES={limit})"


def _storable(text: str, limit: int | None = None) -> str:
    """``text`` as a database's text column takes it: NUL (which PostgreSQL refuses) and
    lone surrogates (no UTF-8 for them) written as escapes, cut to ``limit`` characters."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if limit is None else text[:limit]


def _message(record: logging.LogRecord) -> str:
    """The record's message as a log file shows it, traceback included, scrubbed and cut to size."""
    try:
        text = record.getMessage()
    except Exception:  # noqa: BLE001 - a message whose own formatting fails is kept raw
        text = f"{record.msg} (unformattable log arguments: {record.args!r})"
    if record.exc_info and not record.exc_text:
        record.exc_text = _TRACEBACKS.formatException(record.exc_info)
    if record.exc_text:
        text = f"{text}\n{record.exc_text}"
    if record.stack_info:
        text = f"{text}\n{record.stack_info}"
    text = _storable(scrub(text))
    if len(text) > LINE_MAX_CHARS:
        text = text[:LINE_MAX_CHARS] + f"… ({len(text) - LINE_MAX_CHARS} more characters)"
    return text


class RunLogBuffer(logging.Handler):
    """Keeps the log lines of run ``run_id`` emitted on the thread that made
    it, numbered from ``next_seq``, timed by ``now`` (the lease's database
    clock), up to ``limit`` lines for the whole run (counting the
    ``next_seq - 1`` an earlier holder kept). ``node_id`` (set by the engine)
    names the node being executed. Never raises from a log call."""

    def __init__(self, *, run_id: int, next_seq: int, limit: int, now: Callable[[], datetime]):
        super().__init__()
        self.run_id, self.next_seq, self.limit, self.now = run_id, next_seq, limit, now
        self.thread = threading.get_ident()
        self.started = time.monotonic()
        self.node_id = ""
        self.pending: list[LogLine] = []
        self.dropped = 0
        self._last: logging.LogRecord | None = None  # a record reaching two of our loggers is kept once

    def handle(self, record: logging.LogRecord) -> bool:
        # Called for every record of every thread while attached: the cheap checks first, without a lock.
        if threading.get_ident() != self.thread or record is self._last:
            return False
        self._last = record
        run_id = getattr(record, "run_id", None)
        if run_id is None:
            ids = logcontext.current()
            run_id = ids.run_id if ids is not None else None
        if run_id != self.run_id:
            return False
        try:
            self.keep(record)
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.keep(record)

    def keep(self, record: logging.LogRecord | None) -> None:
        """Keep ``record`` as the run's next line (or count it, past the bound); None: nothing to keep."""
        if record is None:
            return
        self._last = record
        if self.next_seq > self.limit:
            self.dropped += 1
            return
        level, name = _storable(str(record.levelname), 10), _storable(str(record.name), 200)
        self.pending.append((self.next_seq, self.now(), level, name, self.node_id[:100], _message(record)))
        self.next_seq += 1

    def due(self) -> bool:
        """Whether lines wait and the run has gone on for LIVE_AFTER_SECONDS (see there)."""
        return bool(self.pending) and time.monotonic() - self.started >= LIVE_AFTER_SECONDS

    def batch(self, *, final: bool = False) -> list[LogLine]:
        """The lines to write now (``final``: with the marker of the lines not
        kept, for the run's end). Call ``written`` once they are written."""
        if not final or not self.dropped:
            return list(self.pending)
        marker = (self.next_seq, self.now(), "WARNING", logger.name, "", marker_text(self.dropped, self.limit))
        return [*self.pending, marker]

    def written(self, lines: list[LogLine]) -> None:
        """``lines`` (a ``batch``) are stored: forget them."""
        del self.pending[:len([line for line in lines if line[0] < self.next_seq])]


def _sink_loggers() -> list[logging.Logger]:
    """The loggers whose handlers write lines: the root, and every logger that
    does not pass its records up (settings.LOGGING gives the project's, Celery's
    and Django's their own handler)."""
    sinks = [logging.getLogger()]
    for item in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(item, logging.Logger) and not item.propagate:
            sinks.append(item)
    return sinks


@contextmanager
def run_logs_captured(*, run_id: int, resumed: bool, now: Callable[[], datetime]) -> Iterator[RunLogBuffer]:
    """Within the block, the lines run ``run_id`` logs on this thread are kept
    in the buffer it yields (see RunLogBuffer), numbered after an earlier
    holder's when ``resumed`` (a takeover: one read), bounded by
    RUN_LOG_MAX_LINES; on leaving, the buffer is detached (lines not written
    by then are not kept)."""
    next_seq = run_log_next_seq(run_id=run_id, resumed=resumed)
    buffer = RunLogBuffer(run_id=run_id, next_seq=next_seq, limit=settings.RUN_LOG_MAX_LINES, now=now)
    sinks = _sink_loggers()
    for sink in sinks:
        sink.addHandler(buffer)
    try:
        yield buffer
    finally:
        for sink in sinks:
            sink.removeHandler(buffer)
