"""Helpers shared by notify drivers: config checks, secrets, and one JSON POST."""
from __future__ import annotations

import re

import httpx

from apps.notify.base import DeliveryError, Message
from apps.options import is_positive_number
from apps.outbound import OutboundError, http_post
from apps.secrets import SecretMissing, secret_get

DEFAULT_TIMEOUT = 10
# The header that lets a receiver drop a repeated delivery (draft-ietf-httpapi-idempotency-key-header).
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Slack channel / header names and the like: short labels, never free text.
_LABEL_MAX = 255


def is_label(value: object) -> bool:
    """A short non-empty single-line string."""
    return (
        isinstance(value, str)
        and bool(value.strip())
        and len(value) <= _LABEL_MAX
        and not re.search(r"[\r\n]", value)
    )


def timeout_messages(config: dict) -> list[str]:
    if "timeout_seconds" in config and not is_positive_number(config["timeout_seconds"]):
        return ["timeout_seconds must be a positive number"]
    return []


def label_messages(config: dict, keys: tuple[str, ...]) -> list[str]:
    return [
        f"{key} must be a non-empty single-line string" for key in keys if key in config and not is_label(config[key])
    ]


def http_url_messages(config: dict, key: str) -> list[str]:
    """A message when ``config[key]`` (a non-secret URL) is not an http(s) URL."""
    value = config.get(key)
    if key in config and not (isinstance(value, str) and re.match(r"https?://[^/\s]+", value)):
        return [f"{key} must be a string starting with http:// or https://"]
    return []


def secret(config: dict, key: str, *, default_env: str | None, what: str) -> str:
    """The secret ``key`` read from the environment (see apps.secrets.secret_get).

    Raises DeliveryError naming the variable, never the value, when it is unset.
    """
    try:
        return secret_get(config, key, default_env=default_env, what=what)
    except SecretMissing as exc:
        raise DeliveryError(str(exc)) from exc


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def key_headers(message: Message) -> dict:
    """``{"Idempotency-Key": <the message's key>}``, or {} for a message without a key."""
    return {IDEMPOTENCY_HEADER: message.key} if message.key else {}


def post_json(url: str, body: dict, *, headers: dict | None = None, timeout: float) -> httpx.Response:
    """POST ``body`` to ``url`` through apps.outbound and return the response (any status).

    Raises DeliveryError for a refused or malformed URL, a timeout, a
    transport failure or an answer too large to read; its message never
    contains the URL (URLs often embed tokens).
    """
    try:
        return http_post(url, json=body, headers=headers, timeout=timeout)
    except OutboundError as exc:
        raise DeliveryError(str(exc)) from None
    except httpx.TimeoutException as exc:
        raise DeliveryError(f"timeout after {timeout}s ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        raise DeliveryError(f"connection failed ({type(exc).__name__})") from None
    except httpx.HTTPError as exc:
        # httpx's own messages include the URL, so only the error class is kept.
        raise DeliveryError(f"request failed ({type(exc).__name__})") from None


def error_code(text: str) -> str:
    """``text`` when it looks like a short machine error code (``invalid_token``), else ""."""
    text = text.strip()
    return text if re.fullmatch(r"[A-Za-z0-9_.\- ]{1,80}", text) else ""
