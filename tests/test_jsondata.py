"""apps.jsondata's depth check, which refuses deep nesting before json's reader recurses into it."""
from __future__ import annotations

import pytest

from apps.jsondata import MAX_DEPTH, JsonInputError, loads


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("kind", [str, bytes])
def test_nesting_up_to_the_limit_is_read_and_one_level_more_is_refused(kind):
    def as_kind(text: str):
        return text if kind is str else text.encode()

    assert loads(as_kind(nested(MAX_DEPTH)))
    with pytest.raises(JsonInputError, match=f"^nested deeper than {MAX_DEPTH} levels$"):
        loads(as_kind(nested(MAX_DEPTH + 1)))
    with pytest.raises(JsonInputError, match=f"^nested deeper than {MAX_DEPTH} levels$"):
        loads(as_kind('{"a":' * 1_000_000 + "1" + "}" * 1_000_000))


def test_brackets_inside_strings_are_text_not_nesting():
    text = '["' + "[{" * MAX_DEPTH + '", "\\"' + "[" * MAX_DEPTH + '", {"k": "]]"}]'
    assert loads(text) == ["[{" * MAX_DEPTH, '"' + "[" * MAX_DEPTH, {"k": "]]"}]


def test_many_brackets_side_by_side_are_not_deep():
    assert loads("[" + ",".join(["{}", "[]"] * MAX_DEPTH) + "]") == [{}, []] * MAX_DEPTH


def test_a_string_never_closed_is_reported_by_the_reader_whatever_brackets_follow_it():
    with pytest.raises(JsonInputError, match=r"^Unterminated string starting at: line 1 column 2"):
        loads('["' + "[" * (MAX_DEPTH * 2))


def test_bytes_are_read_in_the_encoding_json_detects():
    # In UTF-16 a character's bytes can be a bracket's ("ś" is 5B 01): they are not counted.
    text = '{"a": "' + "ś" * (MAX_DEPTH * 2) + '"}'
    assert loads(text.encode("utf-16")) == {"a": "ś" * (MAX_DEPTH * 2)}
    with pytest.raises(JsonInputError, match=f"^nested deeper than {MAX_DEPTH} levels$"):
        loads(nested(MAX_DEPTH + 1).encode("utf-16-le"))
