"""Log formatting for people reading a terminal (LOG_FORMAT=text).

Log lines quote trace ids, node ids, alert titles and remote error bodies,
which come from outside. Written raw, an escape sequence among them could
recolour or rewrite a terminal, and a newline could forge a whole log line
that `grep <trace id>` would then show as ours. JSON lines (LOG_FORMAT=json)
need none of this: the JSON formatter writes ASCII only, with every control
character escaped.
"""
from __future__ import annotations

import logging

from apps.text import printable


class TextFormatter(logging.Formatter):
    """A logging.Formatter whose line is always one line of printable text:
    control and format characters in it, newlines included, are written as
    escapes (``\\x1b``, ``\\n``). A traceback or stack below the line keeps its
    line breaks, with every other such character escaped."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = printable(self.formatMessage(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + printable(record.exc_text.rstrip("\n"), lines=True)
        if record.stack_info:
            text += "\n" + printable(self.formatStack(record.stack_info), lines=True)
        return text
