"""The slack driver: posts the message to a Slack incoming webhook.

The webhook URL is a secret (it is the token): it comes from the variable
named by ``webhook_url_env`` or from SLACK_WEBHOOK_URL. The message is sent
as Block Kit blocks (a header with the title, the body in mrkdwn, the run in
a context line) with a plain ``text`` fallback for notifications, every text
cut to Slack's limits. A notice names its kind in the header ("Reminder: ...",
a green check mark before "[RESOLVED] ...") and first in the context line.
"""
from __future__ import annotations

import re

from apps.notify.base import NOTICE_LABELS, Delivery, Driver, Message, drivers
from apps.notify.drivers.common import (
    DEFAULT_TIMEOUT,
    error_code,
    key_headers,
    label_messages,
    post_json,
    secret,
    timeout_messages,
    truncate,
)
from apps.secrets import env_name_messages

DEFAULT_ENV = "SLACK_WEBHOOK_URL"
# Slack's limits (Block Kit reference): header text 150, section text 3000.
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
# Slack truncates `text` far later (40,000), but a notification shows only the start.
TEXT_LIMIT = 3000
# "#ops", "@someone" or a conversation id; anything else is most likely the name
# of a NotificationChannel written next to `driver` by mistake.
SLACK_CHANNEL = re.compile(r"[#@][^\s#@]{1,80}|[CGD][A-Z0-9]{6,}")
SEVERITY_EMOJI = {
    "critical": ":red_circle:",
    "warning": ":large_orange_circle:",
    "info": ":large_blue_circle:",
    "ok": ":large_green_circle:",
}
# A resolved notice's header: the title already says RESOLVED.
RESOLVED_EMOJI = ":white_check_mark:"


def _channel_messages(config: dict) -> list[str]:
    channel = config.get("channel")
    if "channel" in config and not (isinstance(channel, str) and SLACK_CHANNEL.fullmatch(channel)):
        return ["channel must be a Slack channel: #name, @user or a channel id"]
    return []


def escape(text: str) -> str:
    """``text`` with the three characters Slack's mrkdwn reserves escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn(text: str, limit: int) -> str:
    """``text`` escaped for mrkdwn and cut to ``limit`` characters without splitting an escape."""
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    cut = escaped[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def slack_payload(message: Message, config: dict) -> dict:
    """The JSON body Slack's incoming webhook receives for ``message``."""
    run = (message.data or {}).get("run") or {}
    facts = [f"*Severity:* {message.severity}"]
    if message.notice:
        facts.insert(0, f"*Notice:* {NOTICE_LABELS[message.notice]}")
    labels = (("Pipeline", "pipeline"), ("Run", "run_id"), ("Trace", "trace_id"), ("Environment", "environment"))
    for label, key in labels:
        if run.get(key) not in (None, ""):
            facts.append(f"*{label}:* {run[key]}")
    emoji = RESOLVED_EMOJI if message.notice == "resolved" else SEVERITY_EMOJI.get(message.severity, "")
    heading = f"Reminder: {message.title}" if message.notice == "reminder" else message.title
    payload = {
        "text": mrkdwn(f"{heading}\n{message.body}", TEXT_LIMIT),
        "blocks": [
            {
                "type": "header",
                "text": {
                    "type": "plain_text",
                    "text": truncate(
                        " ".join(f"{emoji} {heading}".split()) or "Notification", HEADER_LIMIT
                    ),
                    "emoji": True,
                },
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": mrkdwn(message.body or "(no details)", SECTION_LIMIT)},
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn(" | ".join(facts), SECTION_LIMIT)}]},
        ],
    }
    for key in ("channel", "username"):
        if config.get(key):
            payload[key] = config[key]
    return payload


@drivers.register("slack")
class SlackDriver(Driver):
    name = "slack"
    options = frozenset({"webhook_url_env", "channel", "username", "timeout_seconds"})
    secret_keys = ("webhook_url",)
    default_env = {"webhook_url": DEFAULT_ENV}

    def validate_config(self, config: dict) -> list[str]:
        return (
            self.unknown_option_problems(config)
            + self.secret_problems(config)
            + env_name_messages(config, self.secret_keys)
            + label_messages(config, ("username",))
            + _channel_messages(config)
            + timeout_messages(config)
        )

    def send(self, *, message: Message, config: dict) -> list[Delivery]:
        """Posts the message to the incoming webhook, with an Idempotency-Key header
        when the message has a key; Slack's "ok" answer is a success.

        Raises DeliveryError when the URL is not set, malformed or refused, the
        request times out or cannot connect, or the answer is larger than
        OUTBOUND_MAX_RESPONSE_BYTES; any other answer is a failed Delivery
        carrying the status and Slack's error code (never the URL)."""
        url = secret(config, "webhook_url", default_env=DEFAULT_ENV, what="Slack webhook URL")
        timeout = config.get("timeout_seconds", DEFAULT_TIMEOUT)
        # Slack ignores the key; relays and proxies in front of it can drop repeats with it.
        response = post_json(url, slack_payload(message, config), headers=key_headers(message), timeout=timeout)
        answer = response.text.strip()
        plain = response.headers.get("content-type", "").startswith("text/plain")
        if response.is_success and (not plain or answer == "ok"):
            return [Delivery(self.name, True, f"HTTP {response.status_code}")]
        code = error_code(answer)
        if response.is_success:
            detail = f"HTTP {response.status_code} but Slack answered {code!r}" if code else (
                f"HTTP {response.status_code} but Slack did not answer ok"
            )
        else:
            detail = f"HTTP {response.status_code}" + (f" ({code})" if code else "")
        return [Delivery(self.name, False, detail)]
