"""A node's `when`: compiled by validation, evaluated by the engine before the node
would start; false skips the node, an evaluation error fails it."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.orchestration import engine
from apps.orchestration.models import MonitorState, StageExecution
from apps.orchestration.rendering import render_dry_run, render_result
from apps.orchestration.validation import validate_definition
from tests.support import make_run

pytestmark = pytest.mark.django_db

# The disk check against limits that make its status what the test wants, whatever the disk holds.
LIMITS = {
    "ok": {"warning": 1000, "critical": 1000},
    "warning": {"warning": 0, "critical": 1000},
    "critical": {"warning": 0, "critical": 0},
}


def disk(status: str, next_id: str | None = "analyze") -> dict:
    node = {"id": "metrics", "type": "context", "config": {"include": ["disk"], "thresholds": {"disk": LIMITS[status]}}}
    return {**node, "next": next_id} if next_id else node


def transform(node_id: str, when: str | None = None, next_id: str | None = None, **extra) -> dict:
    node = {"id": node_id, "type": "transform", "config": {"mapping": {"seen": "payload.x"}}, **extra}
    if when is not None:
        node["when"] = when
    if next_id:
        node["next"] = next_id
    return node


ANALYZE = {"id": "analyze", "type": "intelligence", "config": {"provider": "local"}, "next": "gate"}


def run_of(nodes: list[dict], payload: dict | None = None):
    return engine.run_execute(run_id=make_run(nodes, payload=payload or {"x": 1}).pk)


def test_a_true_when_runs_the_node():
    run = run_of([disk("warning"), ANALYZE, transform("gate", 'analysis.severity != "ok"')])
    assert run.status == "completed"
    assert run.result["node_results"]["gate"]["status"] == "succeeded"
    assert run.result["node_results"]["gate"]["output"] == {"seen": 1}


def test_a_false_when_skips_the_node_and_the_walk_goes_on_to_its_next():
    run = run_of([disk("ok"), ANALYZE, transform("gate", 'analysis.severity != "ok"', next_id="after"),
                  transform("after")])
    assert run.status == "completed"
    gate = run.result["node_results"]["gate"]
    assert gate["status"] == "skipped" and gate["reason"] == 'when analysis.severity != "ok" was false'
    assert run.result["node_results"]["after"]["status"] == "succeeded"
    assert run.result["executed_nodes"] == ["metrics", "analyze", "gate", "after"]
    # It never started: no stage row, and no place among the nodes a stop left out.
    assert not StageExecution.objects.filter(run=run, node_id="gate").exists()
    assert run.result["skipped_nodes"] == []
    text = render_result(run)
    assert '--- transform (gate) ---\n  Skipped: when analysis.severity != "ok" was false\n\n--- transform (after) ---' in text


def test_an_evaluation_error_fails_the_node_with_the_reason_once_even_with_retries():
    nodes = [disk("ok", next_id="gate"), transform("gate", "payload.missing == 1")]
    run = engine.run_execute(run_id=make_run(nodes, payload={"x": 1}, defaults={"max_retries": 2}).pk)
    assert run.status == "failed"
    gate = run.result["node_results"]["gate"]
    assert gate["status"] == "failed" and gate["attempts"] == 1
    assert gate["error"] == "'when' could not be evaluated: no such member in mapping: 'missing'"
    assert run.error == f"Node 'gate' failed: {gate['error']}"
    assert list(StageExecution.objects.filter(run=run, node_id="gate").values_list("status", flat=True)) == ["failed"]


def test_a_node_not_required_whose_when_fails_lets_the_run_go_on():
    nodes = [transform("gate", "payload.x > 'a'", next_id="after", required=False), transform("after")]
    run = run_of(nodes)
    assert run.status == "completed"
    assert run.result["node_results"]["gate"]["status"] == "failed"
    assert "could not be evaluated" in run.result["node_results"]["gate"]["error"]


def test_a_when_that_is_not_a_bool_fails_the_node():
    run = run_of([transform("gate", "payload.x")])
    assert run.result["node_results"]["gate"]["error"] == "'when' could not be evaluated: the result is not a bool but an int"


def test_a_when_referring_to_a_skipped_node_finds_no_result_for_it():
    nodes = [
        transform("first", "payload.x == 2", next_id="plain"),
        transform("plain", "results.first.seen == 1", next_id="careful", required=False),
        transform("careful", "!has(results.first)"),
    ]
    run = run_of(nodes)
    results = run.result["node_results"]
    assert results["first"]["status"] == "skipped"
    assert results["plain"]["status"] == "failed"
    assert results["plain"]["error"] == "'when' could not be evaluated: no such member in mapping: 'first'"
    assert results["careful"]["status"] == "succeeded"


def test_when_sees_checks_results_run_and_payload():
    when = (
        'checks.disk.status == "warning" && results.metrics.checks.disk.status == "warning" '
        '&& run.trigger == "cli" && run.definition == "p" && run.host == "" && payload.x == 1 && alerts == []'
    )
    run = run_of([disk("warning", next_id="gate"), transform("gate", when)])
    assert run.result["node_results"]["gate"]["status"] == "succeeded", run.result["node_results"]["gate"]


def test_state_in_when_is_what_the_runs_before_found_on_this_host():
    nodes = [disk("warning", next_id="gate"),
             transform("gate", 'state.changed && state.severity == "ok" && state.current == "warning"')]
    first = run_of(nodes)
    assert first.result["node_results"]["gate"]["status"] == "succeeded"
    state = MonitorState.objects.get(definition="p")
    assert state.severity == "warning" and state.last_run_id == first.pk
    second = engine.run_execute(run_id=make_run(nodes, payload={"x": 1}).pk)
    assert second.result["node_results"]["gate"]["status"] == "skipped"


def test_a_when_that_does_not_name_state_adds_no_query():
    def queries(nodes):
        run = make_run(nodes, name=f"q{len(nodes[0])}{nodes[0].get('when', '')[:3]}", payload={"x": 1})
        with CaptureQueriesContext(connection) as captured:
            engine.run_execute(run_id=run.pk)
        return len(captured.captured_queries)

    plain = [transform("a", next_id="b"), transform("b")]
    gated = [transform("a", "payload.x == 1", next_id="b"), transform("b", "results.a.seen == 1")]
    assert queries(gated) == queries(plain)


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ('analysis.severity != ', "Node 'gate': when: line 1, column 19: the expression ends too early"),
        ("severity == 1", "Node 'gate': when: line 1, column 1: undeclared variable 'severity' "
                          "(known: alert, alerts, analysis, checks, payload, results, run, state)"),
        (5, "Node 'gate': when: must be a CEL expression (text), not int"),
        ("", "Node 'gate': when: must be a CEL expression, not empty text"),
        ("1 == 1 && " * 500 + "true", "Node 'gate': when: is 5004 characters long; an expression holds at most 4096"),
    ],
)
def test_validation_compiles_when_and_reports_where_it_is_wrong(when, message):
    config = {"version": "1.0", "nodes": [transform("gate", when)]}
    assert validate_definition(config) == [message]


def test_the_dry_run_shows_a_nodes_when_and_nothing_for_the_others():
    from apps.orchestration.launchrequest import ResolvedDefinition

    config = {"version": "1.0", "nodes": [transform("a", next_id="b"), transform("b", 'payload.x == 1')]}
    text = render_dry_run(resolved=ResolvedDefinition(config, "definition", "p", None), payload={},
                          source="cli", environment="development")
    assert '  1. [transform] a\n     Config: {"mapping": {"seen": "payload.x"}}\n     → next: b\n' in text
    assert '  2. [transform] b\n     Config: {"mapping": {"seen": "payload.x"}}\n     When: payload.x == 1\n     → end' in text


def test_follow_shows_a_skipped_node_with_its_reason():
    from apps.orchestration.rendering import render_progress

    line = render_progress({"phase": "end", "node": "gate", "type": "transform", "attempt": 0, "status": "skipped",
                            "duration_ms": None, "error": "when payload.x == 2 was false"})
    assert line.endswith(" ⤼ gate (transform) skipped: when payload.x == 2 was false")
