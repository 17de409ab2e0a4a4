"""`openai` provider: analysis by an OpenAI-compatible chat completions API.

Works with OpenAI itself and with servers that speak the same protocol
(Ollama, vLLM, LiteLLM...) through ``base_url``. The API key comes from an
environment variable, never from the definition. Whenever the service cannot
give a usable answer the provider raises ProviderUnavailable, and
``analysis_run`` falls back to the local provider. No reason it gives
contains the key or the full URL.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any
from urllib.parse import urlsplit

import httpx

from apps.checkers.base import CRITICAL, OK, WARNING
from apps.intelligence.base import Provider, ProviderUnavailable, providers
from apps.options import is_positive_number
from apps.outbound import OutboundBlocked, OutboundError, http_post, url_host
from apps.secrets import SecretMissing, env_name_messages, inline_secret_messages, scrub, secret_env_name, secret_get

SECRET_KEYS = ("api_key",)
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_TIMEOUT = 30
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
# Low, so the same findings give much the same analysis from run to run.
TEMPERATURE = 0.2

SEVERITIES = (OK, WARNING, CRITICAL)
# Words models use for our three severities.
SEVERITY_ALIASES = {"info": OK, "healthy": OK, "normal": OK, "warn": WARNING, "error": CRITICAL}

SYSTEM_PROMPT = (
    "You are an experienced site reliability engineer. You are given an incident raised by "
    "monitoring (it may be null) and the results of live checks on a server, as JSON. "
    "Explain what is wrong, why, and what to do. Base your answer only on the data given and "
    "quote the numbers that matter. Answer with a single JSON object and nothing else, with "
    'exactly these keys: "summary" (string: one or two sentences on the state of the system), '
    '"probable_cause" (string), "recommendations" (array of strings: concrete actions, most '
    'urgent first), "severity" (one of "ok", "warning", "critical").'
)

INCIDENT_FIELDS = ("title", "severity", "status")
ALERT_FIELDS = ("name", "host", "severity", "status", "description", "labels")
CHECK_FIELDS = ("name", "status", "value", "unit", "message")

# A whole answer wrapped in a Markdown code block: ```json ... ```
_FENCED = re.compile(r"^```[\w-]*[ \t]*\n?(.*?)\n?```$", re.DOTALL)


def _is_http_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:  # a malformed IPv6 literal or port; validation never raises
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and port != 0


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@providers.register("openai")
class OpenAIProvider(Provider):
    """Asks an OpenAI-compatible model to explain the incident and check results."""

    name = "openai"
    # The secret keys are named too: an inline key gets the secret message, not "unknown".
    options = frozenset({"base_url", "model", "timeout_seconds", "api_key_env", "max_tokens", *SECRET_KEYS})

    def validate_config(self, config: dict) -> list[str]:
        messages = super().validate_config(config)
        messages += inline_secret_messages(config, SECRET_KEYS)
        messages += env_name_messages(config, SECRET_KEYS)
        if "base_url" in config and not _is_http_url(config["base_url"]):
            messages.append("base_url must be a URL starting with http:// or https://")
        if "model" in config and not (isinstance(config["model"], str) and config["model"].strip()):
            messages.append("model must be a non-empty string")
        if "timeout_seconds" in config and not is_positive_number(config["timeout_seconds"]):
            messages.append("timeout_seconds must be a positive number")
        if "max_tokens" in config and not _is_positive_int(config["max_tokens"]):
            messages.append("max_tokens must be a positive whole number")
        return messages

    def required_env(self, config: dict) -> list[str]:
        # Without the key the run still ends, on the local fallback: the variable is needed all the same.
        return [secret_env_name(config, "api_key", default_env=DEFAULT_KEY_ENV)]

    def analyze(self, *, incident: dict | None, checks: list[dict], config: dict) -> dict:
        """Send the findings to the chat completions endpoint and return its analysis
        (summary, probable_cause, recommendations, severity, model, fallback_used).

        Makes one outbound HTTP request through apps.outbound. Raises
        ProviderUnavailable when there is no key, the call is refused or
        fails, or the answer is unusable or larger than
        OUTBOUND_MAX_RESPONSE_BYTES.
        """
        try:
            key = secret_get(config, "api_key", default_env=DEFAULT_KEY_ENV, what="OpenAI API key")
        except SecretMissing as exc:
            raise ProviderUnavailable(str(exc)) from None
        base_url = config.get("base_url") or os.environ.get("OPENAI_BASE_URL", "").strip() or DEFAULT_BASE_URL
        model = config.get("model") or os.environ.get("OPENAI_MODEL", "").strip() or DEFAULT_MODEL
        timeout = config.get("timeout_seconds", DEFAULT_TIMEOUT)

        body = {
            "model": model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": prompt_build(incident=incident, checks=checks)},
            ],
            "temperature": TEMPERATURE,
            "response_format": {"type": "json_object"},
        }
        if "max_tokens" in config:
            body["max_tokens"] = config["max_tokens"]

        answer = _post(
            f"{base_url.rstrip('/')}/chat/completions",
            body=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
        )
        return {**answer_parse(answer), "provider": self.name, "model": model, "fallback_used": False}


def prompt_build(*, incident: dict | None, checks: list[dict]) -> str:
    """The user message: the incident and every check result as compact JSON.

    Known secret values are replaced, so none is sent to the model."""
    findings = {
        "incident": _pick(incident, INCIDENT_FIELDS, alerts=True) if isinstance(incident, dict) else None,
        "checks": [_pick(check, CHECK_FIELDS) for check in checks or [] if isinstance(check, dict)],
    }
    data = json.dumps(scrub(findings), separators=(",", ":"), ensure_ascii=False, default=str)
    return f"Incident and live check results (JSON):\n{data}"


def _pick(item: dict, fields: tuple[str, ...], *, alerts: bool = False) -> dict:
    """The fields of ``item`` the model needs, leaving out absent ones to keep the prompt short."""
    picked = {field: item[field] for field in fields if item.get(field) not in (None, "", {})}
    if alerts:
        picked["alerts"] = [_pick(a, ALERT_FIELDS) for a in item.get("alerts") or [] if isinstance(a, dict)]
    return picked


def _post(url: str, *, body: dict, headers: dict, timeout: float) -> object:
    """POST ``body`` and return the decoded JSON answer; raises ProviderUnavailable."""
    host = url_host(url) or "the provider"
    try:
        response = http_post(url, json=body, headers=headers, timeout=timeout)
    except OutboundBlocked as exc:
        raise ProviderUnavailable(f"call refused: {exc}") from None
    except OutboundError as exc:
        raise ProviderUnavailable(str(exc)) from None
    except httpx.TimeoutException:
        raise ProviderUnavailable(f"timeout after {timeout:g}s") from None
    except httpx.TransportError as exc:
        raise ProviderUnavailable(f"cannot reach {host} ({type(exc).__name__})") from None
    except httpx.HTTPError as exc:
        # httpx's own messages include the URL, so only the error class is kept.
        raise ProviderUnavailable(f"request failed ({type(exc).__name__})") from None
    if not response.is_success:
        # Error bodies are left out: some quote part of the key ("Incorrect API key provided: sk-...").
        raise ProviderUnavailable(f"HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise ProviderUnavailable("unparseable answer: the response body is not JSON") from None


def answer_parse(answer: Any) -> dict:
    """The analysis in a chat completions answer: summary, probable_cause,
    recommendations and severity (normalised to ok / warning / critical).

    Raises ProviderUnavailable("unparseable answer: ...") when the answer lacks
    them or has the wrong types."""
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        content = None
    if not isinstance(content, str):
        raise _unparseable("no choices[0].message.content")
    text = content.strip()
    fenced = _FENCED.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        data = json.loads(text)
    except ValueError:
        raise _unparseable("the content is not JSON") from None
    if not isinstance(data, dict):
        raise _unparseable("the content is not a JSON object")

    result = {}
    for field in ("summary", "probable_cause"):
        if field not in data:
            raise _unparseable(f"{field} is missing")
        if not (isinstance(data[field], str) and data[field].strip()):
            raise _unparseable(f"{field} is not a non-empty string")
        result[field] = data[field].strip()

    recommendations = data.get("recommendations")
    if "recommendations" not in data:
        raise _unparseable("recommendations is missing")
    if not (isinstance(recommendations, list) and all(isinstance(r, str) for r in recommendations)):
        raise _unparseable("recommendations is not a list of strings")
    result["recommendations"] = [r.strip() for r in recommendations if r.strip()]

    if "severity" not in data:
        raise _unparseable("severity is missing")
    severity = data["severity"].strip().lower() if isinstance(data["severity"], str) else None
    if severity is not None:
        severity = SEVERITY_ALIASES.get(severity, severity)
    if severity not in SEVERITIES:
        raise _unparseable("severity is not ok, warning or critical")
    result["severity"] = severity
    return result


def _unparseable(why: str) -> ProviderUnavailable:
    return ProviderUnavailable(f"unparseable answer: {why}")
