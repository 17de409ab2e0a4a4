"""Hostile input shared by the hostile-input tests of the commands
(tests/orchestration/test_hostile_input.py) and of the API (tests/api/test_hostile_input.py)."""
from apps.jsondata import MAX_DEPTH

# Text that is hostile in a terminal, a log, a database or an integer conversion.
HOSTILE_TEXT = [
    "",
    " ",
    "\x1b[2J\x1b[31mred",
    "line\nforged: line",
    "carriage\rreturn",
    "nul\x00byte",
    "\u202eevil-rtl",
    "bad-utf8-\udcff",  # what Python makes of undecodable argv bytes
    "x" * 65,
    "y" * 5000,
    "-1",
    "0",
    "nan",
    "inf",
    "-inf",
    "1e309",
    "9" * 30,
    "1" * 5000,
    "'; DROP TABLE orchestration_pipelinerun; --",
]

# JSON documents that must be refused wherever JSON is read.
HOSTILE_JSON = {
    "deep-list": "[" * 100_000 + "]" * 100_000,
    "deep-object": '{"a":' * 100_000 + "1" + "}" * 100_000,
    "just-too-deep": '{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1),
    "nan": '{"a": NaN}',
    "infinity": '{"a": [Infinity]}',
    "minus-infinity": '{"a": -Infinity}',
    "float-overflow": '{"a": 1e999}',
    "huge-int": '{"a": ' + "7" * 5000 + "}",
    "long-float": '{"a": 0.' + "3" * 200 + "}",
    "nul-value": '{"a": "x\\u0000y"}',
    "nul-key": '{"\\u0000": 1}',
    "lone-surrogate": '{"a": "\\ud800"}',
    "truncated": '{"a": [1, 2',
    "not-an-object": "[1, 2, 3]",
    "empty": "",
    "bom": "\ufeff{}",
}
