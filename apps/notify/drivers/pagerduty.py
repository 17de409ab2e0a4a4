"""The pagerduty driver: sends a PagerDuty Events API v2 event.

The routing key is a secret: it comes from the variable named by
``routing_key_env`` or from PAGERDUTY_ROUTING_KEY, and never appears in a
delivery or an error. Every event carries a dedup key derived from what it
is about, so sending the same incident twice pages once, and a resolve
closes the alert its trigger opened: a resolved notice (notify_on) sends
``resolve`` with the key its pipeline's problem notices on that host
triggered with.
"""
from __future__ import annotations

import hashlib
import os

from django.conf import settings

from apps.notify.base import Delivery, Driver, Message, drivers
from apps.notify.drivers.common import (
    DEFAULT_TIMEOUT,
    error_code,
    http_url_messages,
    label_messages,
    post_json,
    secret,
    timeout_messages,
    truncate,
)
from apps.secrets import env_name_messages

DEFAULT_ENV = "PAGERDUTY_ROUTING_KEY"
DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
# Our severities -> PagerDuty's (critical, error, warning, info).
SEVERITY = {"critical": "critical", "error": "error", "warning": "warning", "info": "info", "ok": "info"}
SUMMARY_LIMIT = 1024  # PagerDuty's limit for payload.summary
DETAIL_LIMIT = 4000  # keeps custom_details readable; the event itself may be 512 KB
LIST_LIMIT = 50


def _digest(*parts: object) -> str:
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()[:32]


def event_source(message: Message, config: dict) -> str:
    """The affected system: ``source`` from config, else the first alert's host,
    else the host the run's checks measured, else this host."""
    if config.get("source"):
        return config["source"]
    data = message.data or {}
    incident = data.get("incident") or {}
    for alert in incident.get("alerts") or []:
        if isinstance(alert, dict) and alert.get("host"):
            return str(alert["host"])
    # Not this host when the checks were measured elsewhere: a worker that takes
    # a run over keeps its checks, and the dedup key must not change with it.
    return str(data.get("host") or settings.MONITOR_HOST)


def dedup_key(message: Message, source: str) -> str:
    """A key that stays the same for every event about the same problem.

    An incident is keyed by its id (by a hash of its title when it has none);
    a run without an incident by a hash of its pipeline and source, so each
    pipeline's health on each host is one PagerDuty alert. A notice (problem,
    reminder, resolved) is about the state of its pipeline on its host, not
    about one incident: it is keyed by pipeline and source even with an
    incident, so the resolve reaches what the trigger of another run opened."""
    data = message.data or {}
    incident = data.get("incident")
    if incident and not message.notice:
        if incident.get("id") is not None:
            return f"incident-{incident['id']}"
        return f"incident-{_digest(incident.get('title', ''))}"
    pipeline = (data.get("run") or {}).get("pipeline") or "pipeline"
    return f"pipeline-{_digest(pipeline, source)}"


def event_action(message: Message) -> str:
    """"resolve" for a resolved notice, "trigger" for a problem or a reminder; for
    a plain notification, "resolve" when the incident is resolved, or a run
    without an incident is all OK (which closes what an earlier failing run of
    it opened); else "trigger"."""
    if message.notice:
        return "resolve" if message.notice == "resolved" else "trigger"
    incident = (message.data or {}).get("incident")
    if incident:
        return "resolve" if incident.get("status") == "resolved" else "trigger"
    return "resolve" if message.severity == "ok" else "trigger"


def custom_details(message: Message) -> dict:
    """The run, incident, checks and analysis as PagerDuty shows them under the alert."""
    data = message.data or {}
    run = data.get("run") or {}
    details: dict = {key: run.get(key) for key in ("pipeline", "run_id", "trace_id", "environment")}
    incident = data.get("incident")
    if incident:
        details["incident"] = {
            key: incident.get(key) for key in ("id", "title", "severity", "status", "alert_count")
        }
        hosts = sorted({str(a["host"]) for a in incident.get("alerts") or [] if isinstance(a, dict) and a.get("host")})
        if hosts:
            details["hosts"] = hosts[:LIST_LIMIT]
    checks = data.get("checks") or []
    if checks:
        details["checks"] = {
            str(c.get("name", "")): truncate(
                f"[{str(c.get('status', '')).upper()}] {c.get('message') or c.get('value')}", 200
            )
            for c in checks[:LIST_LIMIT]
        }
    analysis = data.get("analysis")
    if analysis:
        details["analysis"] = {
            "summary": truncate(str(analysis.get("summary") or ""), DETAIL_LIMIT),
            "probable_cause": truncate(str(analysis.get("probable_cause") or ""), DETAIL_LIMIT),
            "recommendations": [truncate(str(r), 500) for r in (analysis.get("recommendations") or [])[:LIST_LIMIT]],
        }
    if message.notice:
        details["notice"] = message.notice
        details["previous"] = data.get("previous")
    details["message"] = truncate(message.body, DETAIL_LIMIT)
    return details


def pagerduty_event(message: Message, config: dict, routing_key: str) -> dict:
    """The Events API v2 body for ``message``."""
    source = event_source(message, config)
    action = event_action(message)
    event: dict[str, object] = {
        "routing_key": routing_key, "event_action": action, "dedup_key": dedup_key(message, source),
    }
    if action == "trigger":
        payload = {
            "summary": truncate(" ".join(message.title.split()) or "Notification", SUMMARY_LIMIT),
            "source": source,
            "severity": SEVERITY.get(message.severity, "error"),
            "component": config.get("component")
            or ((message.data or {}).get("run") or {}).get("pipeline")
            or "pipeline",
            "custom_details": custom_details(message),
        }
        if config.get("group"):
            payload["group"] = config["group"]
        event["payload"] = payload
    return event


@drivers.register("pagerduty")
class PagerDutyDriver(Driver):
    name = "pagerduty"
    options = frozenset(
        {"routing_key_env", "events_url", "source", "component", "group", "timeout_seconds"}
    )
    secret_keys = ("routing_key",)
    default_env = {"routing_key": DEFAULT_ENV}

    def validate_config(self, config: dict) -> list[str]:
        return (
            self.unknown_option_problems(config)
            + self.secret_problems(config)
            + env_name_messages(config, self.secret_keys)
            + http_url_messages(config, "events_url")
            + label_messages(config, ("source", "component", "group"))
            + timeout_messages(config)
        )

    def send(self, *, message: Message, config: dict) -> list[Delivery]:
        """Sends a trigger (or resolve) event; PagerDuty's 202 is a success.

        Raises DeliveryError when the routing key is not set, the URL is
        malformed or refused, the request times out or cannot connect, or the
        answer is larger than OUTBOUND_MAX_RESPONSE_BYTES; any other answer
        is a failed Delivery. Neither ever contains the routing key."""
        routing_key = secret(config, "routing_key", default_env=DEFAULT_ENV, what="PagerDuty routing key")
        event = pagerduty_event(message, config, routing_key)
        timeout = config.get("timeout_seconds", DEFAULT_TIMEOUT)
        # PAGERDUTY_EVENTS_URL serves accounts on another region, or a relay.
        events_url = config.get("events_url") or os.environ.get("PAGERDUTY_EVENTS_URL") or DEFAULT_EVENTS_URL
        response = post_json(events_url, event, timeout=timeout)
        if response.status_code == 202:
            return [Delivery(self.name, True, f"HTTP 202 ({event['event_action']} {event['dedup_key']})")]
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        reason = error_code(str(answer.get("message", ""))) if isinstance(answer, dict) else ""
        detail = f"HTTP {response.status_code}" + (f" ({reason})" if reason else "")
        return [Delivery(self.name, False, detail.replace(routing_key, "[redacted]"))]
