"""A node's ``when``: the CEL condition that decides whether the node runs.

    {"id": "notify", "type": "notify", "when": "analysis.severity != \"ok\"", ...}

The expression is compiled by validation (apps.expressions, the package and
limits of an alert trigger's ``match``) and evaluated by the engine just
before the node would start, over what the run knows by then:

    payload    the run's payload
    alert      the first alert the run's latest ingest node read ({} when none)
    alerts     every alert it read ([] when none)
    checks     check name -> {status, value, unit, message}, from the context nodes so far
    analysis   the latest intelligence node's output ({} when none)
    results    node id -> output, for the nodes that succeeded so far (not skipped ones)
    run        {definition, trigger, host, environment}
    state      {severity, since, changed, current}: what the runs before this one found
               on this host (apps.orchestration.monitoring); read only when named

A missing key is an evaluation error (``has(results.analyze)`` asks first).
"""
from __future__ import annotations

from dataclasses import dataclass

from django.db import DatabaseError

from apps.expressions import Expression, ExpressionError, expression_compile, expression_evaluate
from apps.orchestration.monitoring import state_variable
from apps.orchestration.nodes.base import NodeContext, NodeError, NodeType
from apps.orchestration.nodes.common import all_checks, latest_analysis, latest_incident

WHEN_VARIABLES = frozenset({"payload", "alert", "alerts", "checks", "analysis", "results", "run", "state"})
# The status of a node whose `when` was false, in the run's result (it has no stage row: it never started).
SKIPPED = "skipped"


@dataclass(frozen=True)
class Condition:
    """What a node's ``when`` gave: ``run`` True to execute the node; else
    ``reason`` says why not ("when X was false") or ``error`` why it could
    not be evaluated (the node then fails)."""

    run: bool
    reason: str = ""
    error: str = ""


def when_messages(when: object) -> list[str]:
    """Problems with a node's ``when`` value (empty when it compiles)."""
    try:
        expression_compile(when, variables=WHEN_VARIABLES)  # type: ignore[arg-type]
    except ExpressionError as exc:
        return [f"when: {exc}"]
    return []


def node_condition(node: dict, ctx: NodeContext) -> Condition:
    """What ``node``'s ``when`` gives for the run of ``ctx`` (a node without
    one runs); reads the monitoring state only when the expression names
    ``state``. Never raises."""
    if "when" not in node:
        return Condition(True)
    state = None
    if when_needs_state(node):
        try:
            state = state_variable(ctx)
        except DatabaseError as exc:
            return Condition(False, error=f"'when' could not read the monitoring state: {exc}")
    return when_check(node, ctx, state)


def skipped_entry(node: dict, reason: str) -> dict:
    """The run result's entry of ``node``, skipped by its ``when`` for ``reason``."""
    return {
        "type": node["type"], "status": SKIPPED, "required": node.get("required", True), "attempts": 0,
        "duration_ms": None, "output": {}, "error": None, "reason": reason,
    }


class RefusedNode(NodeType):
    """Stands for a node whose ``when`` could not be evaluated: it fails with why."""

    def __init__(self, error: str):
        self.error = error

    def run(self, config: dict, ctx: NodeContext) -> dict:
        raise NodeError(self.error)


def when_check(node: dict, ctx: NodeContext, state: dict | None = None) -> Condition:
    """Evaluate ``node``'s ``when`` (a node without one runs). ``state`` is the
    ``state`` variable, needed only when the expression names it (see
    when_needs_state). Never raises."""
    text = node.get("when")
    if text is None:
        return Condition(True)
    try:
        expression = expression_compile(text, variables=WHEN_VARIABLES)
    except ExpressionError as exc:  # only for a snapshot that never passed validation
        return Condition(False, error=f"'when' cannot be compiled: {exc}")
    outcome = expression_evaluate(expression, when_variables(expression, ctx, state))
    if outcome.error:
        return Condition(False, error=f"'when' could not be evaluated: {outcome.error}")
    if not outcome.matched:
        return Condition(False, reason=f"when {text} was false")
    return Condition(True)


def when_needs_state(node: dict) -> bool:
    """Whether ``node``'s ``when`` names ``state`` (its evaluation then reads the state row)."""
    text = node.get("when")
    if text is None:
        return False
    try:
        return "state" in expression_compile(text, variables=WHEN_VARIABLES).variables
    except ExpressionError:
        return False


def when_variables(expression: Expression, ctx: NodeContext, state: dict | None) -> dict:
    """The variables ``expression`` names, built from ``ctx`` (only those it reads)."""
    names = expression.variables
    values: dict = {}
    if "payload" in names:
        values["payload"] = ctx.payload
    if names & {"alert", "alerts"}:
        incident = latest_incident(ctx.results) or {}
        alerts = [alert for alert in incident.get("alerts") or [] if isinstance(alert, dict)]
        values["alerts"] = alerts
        values["alert"] = alerts[0] if alerts else {}
    if "checks" in names:
        values["checks"] = {
            str(check.get("name")): {key: check.get(key) for key in ("status", "value", "unit", "message")}
            for check in all_checks(ctx.results)
        }
    if "analysis" in names:
        values["analysis"] = latest_analysis(ctx.results) or {}
    if "results" in names:
        values["results"] = {node_id: entry["output"] for node_id, entry in ctx.results.items()}
    if "run" in names:
        values["run"] = {
            "definition": ctx.pipeline, "trigger": ctx.trigger, "host": ctx.target_host,
            "environment": ctx.environment,
        }
    if "state" in names:
        values["state"] = state or {}
    return values
