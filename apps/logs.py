"""Log formatting: one line per record, in one of two formats (LOG_FORMAT).

Both formats carry the same fields: an ISO-8601 UTC timestamp with
milliseconds (``2026-11-29T10:00:00.123Z``), the level, the process, the
logger, the message, and ``run_id`` / ``trace_id`` when the line concerns a
run (see apps/logcontext.py).

``text`` writes them as ``key=value`` pairs (logfmt), the message last and
quoted::

    time=2026-11-29T10:00:00.123Z level=INFO process=MainProcess logger=celery.app.trace run_id=7 trace_id=abc msg="Task ... succeeded in 0.1s: None"

Log lines quote trace ids, node ids, alert titles and remote error bodies,
which come from outside. Written raw, an escape sequence among them could
recolour or rewrite a terminal, and a newline could forge a whole log line
that `grep <trace id>` would then show as ours: the text format writes every
control and format character as an escape. ``json`` writes one JSON object
per line, ASCII only, with every control character escaped.
"""  # noqa: E501 - the example line above is quoted whole
from __future__ import annotations

import logging
from datetime import UTC, datetime

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

from apps.text import printable

# The fields a line about a run carries, in this order, after the standard ones.
RUN_FIELDS = ("run_id", "trace_id")


# The date and time of the second the last line was written in: lines come many to a second.
_last_second: tuple[int, str] = (-1, "")


def iso_utc(record: logging.LogRecord) -> str:
    """The record's creation time as ISO-8601 UTC with milliseconds and a ``Z``."""
    global _last_second
    created = record.created
    second = int(created)
    # datetime rounds the time to microseconds, which carries into the next second from
    # .9999995 on: such times take the long way, so every line reads as it always did.
    if created >= 0 and created - second < 0.999999:
        cached_second, text = _last_second
        if cached_second != second:
            text = f"{datetime.fromtimestamp(second, tz=UTC):%Y-%m-%dT%H:%M:%S}"
            _last_second = (second, text)
    else:
        text = f"{datetime.fromtimestamp(created, tz=UTC):%Y-%m-%dT%H:%M:%S}"
    return f"{text}.{int(record.msecs):03d}Z"


def _quoted(text: str) -> str:
    # Backslashes and quotes first, so the escapes printable() adds stay single-backslashed.
    return '"' + printable(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def _bare(value) -> str:
    """A field's value, written as it is when it has no space (trace ids never
    do), so `grep ' trace_id=<id>'` finds it; quoted otherwise."""
    text = printable(str(value))
    return text if text and " " not in text else _quoted(str(value))


# Level, process and logger names: a few values written on every line, so written once.
_NAMES: dict[str, str] = {}
_NAMES_LIMIT = 1000


def _bare_name(value) -> str:
    """``_bare(value)``, remembered for a string."""
    if type(value) is not str:
        return _bare(value)
    text = _NAMES.get(value)
    if text is None:
        text = _bare(value)
        if len(_NAMES) < _NAMES_LIMIT:
            _NAMES[value] = text
    return text


class TextFormatter(logging.Formatter):
    """A logging.Formatter writing ``key=value`` pairs (time, level, process,
    logger, run_id and trace_id when present, msg) on one line of printable
    text: control and format characters, newlines included, are written as
    escapes (``\\x1b``, ``\\n``). A traceback or stack below the line keeps its
    line breaks, with every other such character escaped."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso_utc(record)

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        pairs = [
            f"time={iso_utc(record)}",
            f"level={_bare_name(record.levelname)}",
            f"process={_bare_name(record.processName)}",
            f"logger={_bare_name(record.name)}",
        ]
        pairs += [f"{name}={_bare(getattr(record, name))}" for name in RUN_FIELDS if hasattr(record, name)]
        pairs.append(f"msg={_quoted(record.message)}")
        text = " ".join(pairs)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + printable(record.exc_text.rstrip("\n"), lines=True)
        if record.stack_info:
            text += "\n" + printable(self.formatStack(record.stack_info), lines=True)
        return text


class JsonFormatter(_JsonFormatter):
    """python-json-logger's formatter with the timestamp as ISO-8601 UTC (``...Z``)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso_utc(record)
