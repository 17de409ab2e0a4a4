"""Showing text that came from input or from remote services.

Trace ids, node ids, alert titles and error bodies are written by people and
programs we do not control. Printed raw, an escape sequence in one of them
could clear the screen, recolour or rewrite earlier lines, or forge a log
line. ``printable`` makes every such character visible instead.
"""
from __future__ import annotations

import unicodedata

_KEPT_IN_BLOCKS = "\n\t"


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str, *, lines: bool = False) -> str:
    """``text`` with every character that is not printable (control and format
    characters, line and paragraph separators, lone surrogates, unassigned code
    points) written as a Python-style escape (``\\x1b``, ``\\u202e``).

    With ``lines=True`` newlines and tabs are kept, for multi-line blocks
    whose line breaks are ours; otherwise the result is always one line.
    """
    if not isinstance(text, str):
        text = str(text)
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() or (lines and char in _KEPT_IN_BLOCKS) else _escaped(char) for char in text
    )


def display_width(text: str) -> int:
    """The columns ``text`` takes in a terminal: two for a wide East Asian
    character, none for a combining mark, one for any other."""
    if text.isascii():  # one column each; tables of thousands of rows are mostly ASCII
        return len(text)
    return sum(
        0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
        for char in text
    )


def shorten(text: str, width: int, *, keep_end: bool = False) -> str:
    """``text`` cut to at most ``width`` columns, an ellipsis marking the cut
    (at the start with ``keep_end``, for paths whose end says the most)."""
    if display_width(text) <= width:
        return text
    chars = list(reversed(text)) if keep_end else list(text)
    kept, used = [], 1
    for char in chars:
        used += display_width(char)
        if used > width:
            break
        kept.append(char)
    return "…" + "".join(reversed(kept)) if keep_end else "".join(kept) + "…"
