"""A definition's ``triggers``: which alerts start it. Checking them (a pure
function, part of validate_definition) and reading them for the alert intake.

    "triggers": [{"alert": {"source": "alertmanager", "match": "<CEL>",
                            "on": ["firing"], "dedup_seconds": 300}}]

``match`` is a CEL expression (apps.expressions) over one parsed alert, seen as
the variable ``alert`` with the fields of ALERT_FIELDS; it is compiled here, so
a definition with a bad one is refused before it is stored or run. A top-level
name other than ``alert`` is refused too; a missing field or label key can only
show at evaluation, where it counts as no match.
"""
from __future__ import annotations

from dataclasses import dataclass

from apps.alerts.services import alert_sources
from apps.expressions import Expression, ExpressionError, expression_compile
from apps.text import printable

# The variables a match sees, and the fields of its one variable.
MATCH_VARIABLES = frozenset({"alert"})
ALERT_FIELDS = ("name", "severity", "status", "host", "labels", "source")
STATUSES = ("firing", "resolved")
DEFAULT_ON = ("firing",)
DEFAULT_DEDUP_SECONDS = 300
DEDUP_SECONDS_MAX = 86400
# Triggers per definition: each is evaluated on every alert of its source.
TRIGGERS_MAX = 20
_KINDS = ("alert",)
_ALERT_FIELDS = {"source", "match", "on", "dedup_seconds"}


@dataclass(frozen=True)
class AlertTrigger:
    """One alert trigger of a valid definition, ready to evaluate."""

    source: str
    match: Expression | None  # None: every alert of the source
    on: tuple[str, ...]
    dedup_seconds: int


def trigger_messages(triggers: object) -> list[str]:
    """Every problem of a definition's ``triggers`` value (empty when it is
    valid or absent). Pure: reads nothing but the registered alert sources."""
    if triggers is None:
        return []
    if not isinstance(triggers, list):
        return ["'triggers' must be a list"]
    if len(triggers) > TRIGGERS_MAX:
        return [f"'triggers' holds {len(triggers)} triggers; at most {TRIGGERS_MAX}"]
    messages = []
    for index, trigger in enumerate(triggers):
        where = f"triggers[{index}]"
        if not isinstance(trigger, dict) or len(trigger) != 1 or next(iter(trigger)) not in _KINDS:
            messages.append(f"{where} must be an object with one key: {', '.join(_KINDS)}")
            continue
        messages += _alert_messages(trigger["alert"], f"{where}.alert")
    return messages


def _alert_messages(alert: object, where: str) -> list[str]:
    if not isinstance(alert, dict):
        return [f"{where} must be an object"]
    messages = []
    source, known = alert.get("source"), alert_sources()
    if source is None:
        messages.append(f"{where}.source is required (one of: {', '.join(known)})")
    elif not isinstance(source, str) or source not in known:
        shown = printable(str(source)[:50])
        messages.append(f"{where}.source must be one of: {', '.join(known)} (not {shown})")
    if "match" in alert:
        try:
            expression_compile(alert["match"], variables=MATCH_VARIABLES)
        except ExpressionError as exc:
            messages.append(f"{where}.match: {exc}")
    if "on" in alert:
        on = alert["on"]
        if not isinstance(on, list) or not on or any(not isinstance(s, str) or s not in STATUSES for s in on):
            messages.append(f"{where}.on must be a non-empty list of: {', '.join(STATUSES)}")
        elif len(set(on)) != len(on):
            messages.append(f"{where}.on names a status more than once")
    if "dedup_seconds" in alert:
        seconds = alert["dedup_seconds"]
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 <= seconds <= DEDUP_SECONDS_MAX:
            messages.append(f"{where}.dedup_seconds must be a whole number from 0 to {DEDUP_SECONDS_MAX}")
    for key in sorted(set(alert) - _ALERT_FIELDS):
        messages.append(f"unknown field in {where}: {printable(str(key)[:60])}")
    return messages


def alert_triggers(*, config: dict, source: str) -> list[AlertTrigger]:
    """The alert triggers of the valid definition ``config`` that name
    ``source``, in definition order (compiled expressions come from the
    cache). Raises ExpressionError only for a definition that never passed
    validation."""
    found = []
    for trigger in config.get("triggers") or []:
        alert = trigger.get("alert") if isinstance(trigger, dict) else None
        if not isinstance(alert, dict) or alert.get("source") != source:
            continue
        match = alert.get("match")
        found.append(
            AlertTrigger(
                source=source,
                match=expression_compile(match, variables=MATCH_VARIABLES) if match is not None else None,
                on=tuple(alert.get("on") or DEFAULT_ON),
                dedup_seconds=alert.get("dedup_seconds", DEFAULT_DEDUP_SECONDS),
            )
        )
    return found
