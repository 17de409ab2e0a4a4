"""apps.expressions: compiling CEL text (with positions in errors, bounds on size
and nesting) and evaluating it, where every failure counts as no match."""
import pytest

from apps.expressions import (
    EXPRESSION_MAX,
    ExpressionError,
    Outcome,
    expression_compile,
    expression_evaluate,
)

ALERT = {
    "name": "HighCPUUsage", "severity": "critical", "status": "firing", "host": "web-01",
    "labels": {"team": "ops", "job": "node"}, "source": "alertmanager",
}


def evaluate(text: str, alert: dict | None = None) -> Outcome:
    return expression_evaluate(expression_compile(text, variables={"alert"}), {"alert": alert or ALERT})


@pytest.mark.parametrize(
    "text, matched",
    [
        ('alert.severity == "critical"', True),
        ('alert.severity == "warning"', False),
        ('alert.labels["team"] == "ops" && alert.host.startsWith("web-")', True),
        ('alert.name.matches("^High.*Usage$")', True),
        ('has(alert.labels.team)', True),
        ('has(alert.labels.owner)', False),
        ('alert.labels.exists(k, k == "job")', True),
        ('alert.status in ["firing", "resolved"]', True),
        # CEL's || absorbs an error on one side when the other side is true.
        ('alert.labels.owner == "x" || alert.source == "alertmanager"', True),
    ],
)
def test_matching_expressions(text, matched):
    assert evaluate(text) == Outcome(matched)


@pytest.mark.parametrize(
    "text, reason",
    [
        ('alert.labels.owner == "x"', "no such member in mapping: 'owner'"),
        ('alert.labels["owner"] == "x"', "no such key"),
        ('alert.name', "the result is not a bool but a string"),
        ('alert.name + 1 == 2', "no matching overload"),
    ],
)
def test_evaluation_problems_are_no_match_with_a_reason(text, reason):
    outcome = evaluate(text)
    assert outcome.matched is False
    assert reason in outcome.error
    assert "\n" not in outcome.error and "Activation" not in outcome.error


def test_a_variable_missing_at_evaluation_is_no_match():
    outcome = expression_evaluate(expression_compile("other == 1"), {"alert": ALERT})
    assert outcome.matched is False and "undeclared reference to 'other'" in outcome.error


@pytest.mark.parametrize(
    "text, message",
    [
        ('alert.severity == "critical" &&', "line 1, column 30: the expression ends too early"),
        ('alert.severity = "critical"', "line 1, column 16: unexpected character '='"),
        ('alert.name == "a" "b"', "line 1, column 19: unexpected '\"b\"'"),
        ('alert.name == "a"\n  && alert.host ==', "line 2, column 17: the expression ends too early"),
        ('labels.team == "ops"', "line 1, column 1: undeclared variable 'labels' (known: alert)"),
        ('alert.name == "a" || metric > 3', "line 1, column 22: undeclared variable 'metric' (known: alert)"),
        ('alert.labels.exists(k, [1, 2].all(v, v > 0))',
         "line 1, column 24: a comprehension (all) inside another is not allowed"),
        ("(" * 500 + "true" + ")" * 500, "the expression is nested too deeply"),
        ("!" * 1500 + "true", "the expression is nested too deeply"),
        ("", "must be a CEL expression, not empty text"),
        (7, "must be a CEL expression (text), not int"),
        ("true || " * 600 + "true", f"is 4804 characters long; an expression holds at most {EXPRESSION_MAX}"),
    ],
)
def test_compile_errors_are_one_line_with_the_position(text, message):
    with pytest.raises(ExpressionError) as caught:
        expression_compile(text, variables={"alert"})
    assert str(caught.value) == message


def test_variables_bound_by_macros_are_not_undeclared():
    expression = expression_compile('alert.labels.exists(key, key == "team")', variables={"alert"})
    assert expression.variables == frozenset({"alert"})


def test_error_text_is_printable():
    with pytest.raises(ExpressionError) as caught:
        expression_compile("alert.name == 1 \x1b[2J", variables={"alert"})
    assert "\x1b" not in str(caught.value)
    assert str(caught.value) == "line 1, column 17: unexpected character '\\x1b'"


def test_compiled_programs_are_cached_by_text():
    first = expression_compile('alert.host == "web-01"')
    assert expression_compile('alert.host == "web-01"') is first
    assert evaluate('alert.host == "web-01"').matched


def test_evaluation_reads_label_values_from_untrusted_alerts():
    alert = {**ALERT, "labels": {"team": "\x00ops\u202e", "weird key": "1"}}
    assert evaluate('alert.labels["weird key"] == "1"', alert).matched
    assert not evaluate('alert.labels.team == "ops"', alert).matched
