"""Showing text that came from input or from remote services.

Trace ids, node ids, alert titles and error bodies are written by people and
programs we do not control. Printed raw, an escape sequence in one of them
could clear the screen, recolour or rewrite earlier lines, or forge a log
line. ``printable`` makes every such character visible instead.
"""
from __future__ import annotations

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
