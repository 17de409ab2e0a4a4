"""JSON from outside (definition files, payloads): read with limits, checked before storing.

Python's reader accepts what neither a run nor the databases can hold: NaN
and Infinity (PostgreSQL's jsonb and SQLite's JSON refuse them), integers of
thousands of digits (Python itself refuses to convert past 4,300), nesting
deep enough to exhaust the interpreter's stack, NUL characters (PostgreSQL
text cannot hold them) and lone UTF-16 surrogates (no UTF-8 encoding exists).
``loads`` refuses all of them with one message naming the limit, and
``problems`` finds the same in data that did not come through ``loads``
(a definition edited in the admin, a payload built by a caller).
"""
from __future__ import annotations

import json
import math
import re

from apps.text import printable

# Deep enough for any alert or definition seen in practice, far below the
# interpreter's recursion limit.
MAX_DEPTH = 64
# Characters in one number literal: 64-bit integers and full-precision floats fit easily.
MAX_NUMBER_CHARS = 40
# At most this many problems are listed; one is enough to refuse the input.
MAX_PROBLEMS = 5
_INT_LIMIT = 10**MAX_NUMBER_CHARS
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# A JSON string literal (skipped whole), one bracket, or the quote of a string never closed:
# what the depth check looks at.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}"]')


class JsonInputError(ValueError):
    """The text is not JSON this program accepts; the message says why."""


def _number_text(text: str) -> str:
    if len(text) > MAX_NUMBER_CHARS:
        raise JsonInputError(f"a number longer than {MAX_NUMBER_CHARS} characters ({text[:12]}…)")
    return text


def _parse_float(text: str) -> float:
    value = float(_number_text(text))
    if not math.isfinite(value):
        raise JsonInputError(f"the number {text} is out of range (numbers must be finite)")
    return value


def _parse_constant(name: str):
    raise JsonInputError(f"{name} is not allowed (numbers must be finite)")


def loads(text: str | bytes):
    """Parse ``text`` as JSON within this module's limits.

    Raises JsonInputError for malformed JSON (with json's own line and column),
    non-finite numbers, numbers longer than MAX_NUMBER_CHARS, nesting deeper
    than MAX_DEPTH, and strings holding NUL characters or lone surrogates.
    """
    _refuse_deep_nesting(text)
    try:
        data = json.loads(
            text,
            parse_int=lambda t: int(_number_text(t)),
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except json.JSONDecodeError as exc:
        raise JsonInputError(str(exc)) from None
    except RecursionError:
        raise JsonInputError(f"nested deeper than {MAX_DEPTH} levels") from None
    found = problems(data, limit=1)
    if found:
        raise JsonInputError(found[0])
    return data


def _refuse_deep_nesting(text: str | bytes) -> None:
    """Raise JsonInputError when ``text`` opens more than MAX_DEPTH brackets at once, before
    the parser recurses into them: json's reader goes as deep as the interpreter's stack, and
    near that limit the garbage collector's finalizers fail too, printing noise on stderr.
    Text with no more than MAX_DEPTH opening brackets in all is not scanned."""
    if isinstance(text, str):
        data = text
    else:
        raw = bytes(text)
        try:
            data = raw.decode(json.detect_encoding(raw), "surrogatepass")  # as json's reader decodes them
        except UnicodeDecodeError:
            return  # the reader refuses these bytes itself
    if data.count("[") + data.count("{") <= MAX_DEPTH:
        return
    depth = 0
    for match in _TOKENS.finditer(data):
        token = match.group()
        if len(token) > 1:
            continue  # a string: brackets inside it are text
        if token == '"':
            return  # a string never closed: json's reader says where
        if token in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise JsonInputError(f"nested deeper than {MAX_DEPTH} levels")
        else:
            depth -= 1


def _at(path: str) -> str:
    if len(path) > 80:
        path = path[:79] + "…"
    return f" at {path}" if path else ""


def _key(key: object) -> str:
    text = printable(str(key))
    return text if len(text) <= 40 else text[:39] + "…"


def problems(data, *, limit: int = MAX_PROBLEMS) -> list[str]:
    """What in ``data`` (parsed JSON: dicts, lists, strings, numbers...) cannot
    be stored or run, each with where it is (``nodes[0].config.url``); at most
    ``limit`` of them. Touches nothing and never raises."""
    found: list[str] = []
    # Iterative, so data nested past the interpreter's recursion limit is judged too.
    stack = [(data, "", 1)]
    while stack and len(found) < limit:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            match = _UNSTORABLE.search(value)
            if match:
                what = "NUL character" if match.group() == "\x00" else "lone surrogate character"
                found.append(f"a {what} in the text{_at(path)}")
        elif isinstance(value, bool) or value is None:
            pass
        elif isinstance(value, int):
            if abs(value) >= _INT_LIMIT:
                found.append(f"a number longer than {MAX_NUMBER_CHARS} characters{_at(path)}")
        elif isinstance(value, float):
            if not math.isfinite(value):
                found.append(f"the number {value} is not allowed{_at(path)} (numbers must be finite)")
        elif isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                found.append(f"nested deeper than {MAX_DEPTH} levels")
                continue
            if isinstance(value, dict):
                children = []
                for key, child in value.items():
                    child_path = f"{path}.{_key(key)}" if path else _key(key)
                    if isinstance(key, str) and _UNSTORABLE.search(key):
                        found.append(f"a NUL or lone surrogate character in a key{_at(path)}")
                    children.append((child, child_path, depth + 1))
            else:
                children = [(child, f"{path}[{index}]", depth + 1) for index, child in enumerate(value)]
            stack.extend(reversed(children))
        else:
            found.append(f"a value of type {type(value).__name__} is not JSON{_at(path)}")
    return found[:limit]


def encoded_size(data) -> int:
    """How many bytes ``data`` (storable JSON: see ``problems``) takes as
    compact JSON in UTF-8, the measure of the size limits on payloads and
    node outputs. Raises TypeError or ValueError when ``data`` is not JSON."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    # ASCII text is one byte a character; only other text needs encoding to be measured.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


# Characters of an output's JSON text a cut output keeps, so a person can see what it was.
PREVIEW_CHARS = 1000


def cut_to(data, max_bytes: int):
    """``data`` itself when its compact JSON (values JSON cannot hold shown as
    text) is at most ``max_bytes`` bytes, else a marker standing for it:
    ``{"truncated": true, "bytes": <its size>, "preview": <the start of its
    JSON text>}``. Touches nothing and never raises."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
    # Cheap first: no text takes fewer bytes than characters, nor more than four bytes each.
    if len(text) * 4 <= max_bytes:
        return data
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    if size <= max_bytes:
        return data
    return {"truncated": True, "bytes": size, "preview": text[:PREVIEW_CHARS]}


def is_cut(data) -> bool:
    """Whether ``data`` is the marker ``cut_to`` puts in place of data too large."""
    return isinstance(data, dict) and data.get("truncated") is True and set(data) == {"truncated", "bytes", "preview"}
