"""The webhook driver: POSTs the message as JSON to a URL.

Webhook URLs often embed a token (Slack, Teams, Discord), so the URL is a
secret: it comes from the variable named by ``url_env`` or from
NOTIFY_WEBHOOK_URL, and no message this driver produces contains it.
Header values that authenticate (``Authorization``, ``X-Api-Key``...) are
secrets too: ``headers_env`` maps such a header to the variable holding it.
A message with a key is sent with an ``Idempotency-Key`` header, which the
config cannot set: a fixed value would make the receiver drop every
notification after the first as a repeat.
"""
from __future__ import annotations

import os
import re

from apps.notify.base import Delivery, DeliveryError, Driver, Message, drivers
from apps.notify.drivers.common import (
    DEFAULT_TIMEOUT,
    IDEMPOTENCY_HEADER,
    key_headers,
    post_json,
    secret,
    timeout_messages,
)
from apps.secrets import WHERE_SECRETS_LIVE, env_name_messages, remember

DEFAULT_ENV = "NOTIFY_WEBHOOK_URL"
# Header names whose values are credentials: refused in ``headers``, allowed in ``headers_env``.
_SENSITIVE_HEADER = re.compile(r"auth|token|secret|key|signature|password|cookie|session", re.IGNORECASE)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _is_string_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _is_key_header(name: object) -> bool:
    return isinstance(name, str) and name.strip().lower() == IDEMPOTENCY_HEADER.lower()


@drivers.register("webhook")
class WebhookDriver(Driver):
    name = "webhook"
    options = frozenset({"url_env", "timeout_seconds", "headers", "headers_env"})
    secret_keys = ("url",)
    default_env = {"url": DEFAULT_ENV}

    def validate_config(self, config: dict) -> list[str]:
        messages = self.unknown_option_problems(config)
        messages += self.secret_problems(config) + env_name_messages(config, self.secret_keys)
        messages += timeout_messages(config)
        if "headers" in config and not _is_string_map(config["headers"]):
            messages.append("headers must be an object of strings")
        if "headers_env" in config and not (
            _is_string_map(config["headers_env"])
            and all(_ENV_NAME.fullmatch(v) for v in config["headers_env"].values())
        ):
            messages.append("headers_env must be an object of header name -> environment variable name")
        for option in ("headers", "headers_env"):
            names = config.get(option)
            messages += [
                f"header {name} is set by the driver (<run id>-<node id>) and cannot be set in {option}"
                for name in (sorted(names) if isinstance(names, dict) else [])
                if _is_key_header(name)
            ]
        return messages

    def secret_problems(self, config: dict) -> list[str]:
        headers = config.get("headers")
        return super().secret_problems(config) + [
            f"header {name} looks like a credential and must not be written in the "
            f"definition: put it in an environment variable and name it in headers_env"
            for name in (sorted(headers) if isinstance(headers, dict) else [])
            # The key header is refused by validate_config, with its own reason.
            if isinstance(name, str) and _SENSITIVE_HEADER.search(name) and not _is_key_header(name)
        ]

    def required_env(self, config: dict) -> list[str]:
        headers_env = config.get("headers_env")
        extra = [v for v in headers_env.values() if isinstance(v, str)] if isinstance(headers_env, dict) else []
        return super().required_env(config) + extra

    def _headers(self, config: dict) -> dict:
        """The request headers, with secret ones read from the environment; raises DeliveryError."""
        headers = dict(config.get("headers") or {})
        for header, variable in (config.get("headers_env") or {}).items():
            value = os.environ.get(variable, "").strip()
            if not value:
                raise DeliveryError(
                    f"No value for header {header}: set {variable} (named by the node's headers_env) "
                    f"{WHERE_SECRETS_LIVE}"
                )
            remember(value)
            headers[header] = value
        return headers

    def send(self, *, message: Message, config: dict) -> list[Delivery]:
        """POSTs {"title", "body", "severity", "data"} (a notice adds "notice"
        and "previous"), with an Idempotency-Key header when the message has a
        key; a 2xx answer is a success.

        Raises DeliveryError when the URL or a header variable is not set, the
        URL is malformed or refused by apps.outbound, the request times out or
        cannot connect, or the answer is larger than
        OUTBOUND_MAX_RESPONSE_BYTES; a non-2xx answer is a failed Delivery."""
        url = secret(config, "url", default_env=DEFAULT_ENV, what="webhook URL")
        headers = {**self._headers(config), **key_headers(message)}
        timeout = config.get("timeout_seconds", DEFAULT_TIMEOUT)
        body: dict[str, object] = {
            "title": message.title,
            "body": message.body,
            "severity": message.severity,
            "data": message.data,
        }
        if message.notice:
            # Only added keys: receivers of plain notifications see the body they always have.
            body["notice"] = message.notice
            body["previous"] = (message.data or {}).get("previous")
        response = post_json(url, body, headers=headers, timeout=timeout)
        return [Delivery(self.name, response.is_success, f"HTTP {response.status_code}")]
