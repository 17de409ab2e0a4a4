"""/api/v1/alerts/<source>: the alert receiver. Alertmanager, Grafana, PagerDuty, Datadog
(or anything, as generic) post their notifications here; the definitions whose triggers
match start runs at once. Scope: alerts.

The view reads the body within the API's bounds and hands it to the alert intake
(apps.orchestration.intake), which records the alerts and stores the runs in one
transaction before the answer."""
from __future__ import annotations

from django.http import HttpRequest
from ninja import Router, Schema, Status

from apps.alerts.services import alert_sources
from apps.api.auth import ApiKeyAuth
from apps.api.body import json_body
from apps.api.errors import ApiError
from apps.api.schemas import AUTH_ERRORS, BODY_ERRORS, NOT_FOUND
from apps.orchestration.intake import alerts_receive
from apps.orchestration.launchrequest import LaunchError

router = Router(tags=["alerts"])


class AlertsReceivedOut(Schema):
    """What a notification started: new runs, the runs a repeat of it had started, and how
    many of its alerts matched no definition's trigger."""

    runs: list[int]
    deduplicated: list[int]
    unmatched: int


_BODY_DOC = {
    "requestBody": {
        "required": True,
        "description": "The notification as the source sends it (an Alertmanager group, a Grafana "
        "notification, a PagerDuty v3 event, a Datadog webhook, or generic alerts).",
        "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
    }
}


@router.post(
    "/{source}",
    auth=ApiKeyAuth("alerts"),
    response={202: AlertsReceivedOut, **AUTH_ERRORS, **BODY_ERRORS, **NOT_FOUND},
    summary="Receive alerts",
    openapi_extra=_BODY_DOC,
)
def alerts_post(request: HttpRequest, source: str) -> Status:
    """Record the notification's alerts and start a run of every definition whose `triggers`
    match them: one run per matching definition and per host the matching alerts name. A
    repeat of a notification (same group, status and alert fingerprints) within the trigger's
    `dedup_seconds` starts nothing: its runs are listed under `deduplicated`. 404 for an
    unknown source, 400 for a body that is not alerts of that source. Scope: alerts."""
    if source not in alert_sources():
        raise ApiError(404, f"Unknown alert source (known: {', '.join(alert_sources())})")
    body = json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "The alert notification must be a JSON object")
    try:
        intake = alerts_receive(source=source, body=body)
    except LaunchError as exc:
        message = str(exc)
        raise ApiError(400, message, [message]) from None
    return Status(
        202,
        {"runs": [run.pk for run in intake.runs], "deduplicated": intake.deduplicated, "unmatched": intake.unmatched},
    )
