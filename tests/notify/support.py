"""Test data and helpers shared by the notify tests."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from apps.notify.base import Message
from tests.support import free_port  # noqa: F401  (aiosmtpd's controller needs a real port)

# Conventional variables the drivers fall back on: a developer's own must not leak into a test.
DEFAULT_VARIABLES = (
    "NOTIFY_WEBHOOK_URL",
    "SLACK_WEBHOOK_URL",
    "PAGERDUTY_ROUTING_KEY",
    "NOTIFY_EMAIL_TO",
    "EMAIL_HOST_PASSWORD",
)

RUN = {"pipeline": "health-check", "run_id": 42, "trace_id": "abc-123", "environment": "production"}
INCIDENT = {
    "id": 3,
    "title": "High CPU on web-01",
    "severity": "critical",
    "status": "open",
    "alert_count": 1,
    "alerts": [{"name": "HighCPU", "host": "web-01", "severity": "critical", "status": "firing"}],
}
CHECKS = [{"name": "cpu", "status": "critical", "value": 97.0, "unit": "%", "message": "CPU at 97%"}]
ANALYSIS = {
    "summary": "CPU saturated by one process",
    "probable_cause": "A runaway worker",
    "recommendations": ["Restart the worker"],
    "severity": "critical",
    "provider": "local",
}
BODY = (
    "Pipeline: health-check (run 42, trace abc-123, environment production)\n"
    "Incident #3: High CPU on web-01 (critical, open, 1 alert(s))\n"
    "Checks:\n"
    "  - [CRITICAL] cpu: CPU at 97% <load & steal>"
)


def make_message(
    *, incident=INCIDENT, severity="critical", title="[CRITICAL] High CPU on web-01", body=BODY, key="", host=None
) -> Message:
    """A message shaped like message_build's, with fixed text; without ``key``, as sent outside a run."""
    return Message(
        title=title,
        body=body,
        severity=severity,
        data={"run": dict(RUN), "host": host, "incident": incident, "checks": CHECKS, "analysis": ANALYSIS},
        key=key,
    )


# What receivers last heard before a resolved notice or a reminder.
WARNING_SINCE = {"severity": "warning", "since": "2026-12-07T10:00:00+00:00"}
RESOLVED_LINE = "Resolved: WARNING since 2026-12-07 10:00:00 UTC is over; now OK."


def make_notice(notice: str, *, previous=WARNING_SINCE, status="ok", incident=None, host="web-07", key="") -> Message:
    """A notice built by message_build from a run of health-check on ``host`` whose
    memory check is ``status``."""
    from apps.notify.message import message_build

    return message_build(
        run_info=dict(RUN),
        incident=incident,
        checks=[{"name": "memory", "status": status, "value": 85.0, "unit": "%", "message": f"Memory {status}"}],
        analysis=None,
        host=host,
        key=key,
        notice=notice,
        previous=previous,
    )


def assert_not_in(result: dict, *secrets: str) -> None:
    """None of ``secrets`` appears anywhere in ``result`` (as JSON)."""
    text = json.dumps(result)
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked into {text}"


# --- a real SMTP server -------------------------------------------------------


@dataclass
class SmtpServer:
    """What the SMTP server received, and how it behaves."""

    port: int = 0
    messages: list = field(default_factory=list)  # {"mail_from", "rcpt_tos", "content"}
    logins: list = field(default_factory=list)  # (login, password) of every AUTH attempt
    password: str | None = None  # when set, AUTH succeeds only with it
    refuse_domain: str = "refused.example"  # RCPT TO this domain answers 550
    delay: float = 0.0  # seconds before answering DATA

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@" + self.refuse_domain):
            return "550 5.1.1 Mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        self.messages.append(
            {"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos), "content": envelope.content}
        )
        return "250 Message accepted for delivery"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult

        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((login, password))
        # handled=False: aiosmtpd itself answers 235 or 535.
        return AuthResult(success=self.password is None or password == self.password, handled=False)
