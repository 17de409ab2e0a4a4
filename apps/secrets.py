"""Secrets (webhook URLs, routing keys, passwords, API keys).

A secret never lives in a definition, a run or a channel row: configs name
the environment variable that holds it (``url_env``, ``api_key_env``...), or
rely on a conventional variable (SLACK_WEBHOOK_URL...), and the value is read
in the worker when the node runs. Every value read that way is remembered in
this process and scrubbed from node outputs, errors and log lines.
"""
from __future__ import annotations

import logging
import os

from django.conf import settings

REDACTED = "[redacted]"
# Values shorter than this are not scrubbed: replacing "a" everywhere helps no one.
MIN_SECRET_LENGTH = 6

_seen: set[str] = set()


class SecretMissing(Exception):
    """A secret a node needs is not set in this process's environment."""


def inline_secret_messages(config: dict, keys: tuple[str, ...]) -> list[str]:
    """Validation messages for secrets written straight into a config."""
    return [
        f"{key} is a secret and must not be written in the definition: "
        f"put it in an environment variable and name it with {key}_env"
        for key in keys
        if key in config
    ]


def env_name_messages(config: dict, keys: tuple[str, ...]) -> list[str]:
    """Validation messages for ``<key>_env`` options that are not variable names."""
    messages = []
    for key in keys:
        name = config.get(f"{key}_env")
        if f"{key}_env" in config and not (isinstance(name, str) and name.strip() and "=" not in name):
            messages.append(f"{key}_env must name an environment variable")
    return messages


def secret_get(config: dict, key: str, *, default_env: str | None, what: str) -> str:
    """The secret ``key`` of ``config``: from the variable named by ``<key>_env``,
    else from ``default_env``. Raises SecretMissing (naming the variable, never
    a value) when it is not set. The value is remembered for scrubbing."""
    name = config.get(f"{key}_env") or default_env
    value = os.environ.get(name, "").strip() if name else ""
    if not value:
        if config.get(f"{key}_env"):
            raise SecretMissing(f"No {what}: environment variable {name} is not set")
        hint = f"set {default_env} or the node's {key}_env" if default_env else f"set the node's {key}_env"
        raise SecretMissing(f"No {what}: {hint}")
    remember(value)
    return value


def remember(value: str) -> None:
    if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
        _seen.add(value)


def _known() -> list[str]:
    values = set(_seen)
    for name in settings.SECRET_ENV_VARS:
        value = os.environ.get(name, "").strip()
        if len(value) >= MIN_SECRET_LENGTH:
            values.add(value)
    # Longest first, so a secret containing another is replaced whole.
    return sorted(values, key=len, reverse=True)


def scrub(obj):
    """``obj`` with every known secret value replaced by REDACTED (deep, for JSON-like data)."""
    known = _known()
    if not known:
        return obj
    return _scrub(obj, known)


def _scrub(obj, known: list[str]):
    if isinstance(obj, str):
        for value in known:
            if value in obj:
                obj = obj.replace(value, REDACTED)
        return obj
    if isinstance(obj, dict):
        return {_scrub(k, known): _scrub(v, known) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_scrub(v, known) for v in obj]
    return obj


class ScrubFilter(logging.Filter):
    """Removes known secret values from log records before they are written."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True
