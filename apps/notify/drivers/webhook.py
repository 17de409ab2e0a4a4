"""The webhook driver: POSTs the message as JSON to a URL.

Webhook URLs often embed a token (Slack, Teams, Discord), so no message this
driver produces ever contains the URL.
"""
from __future__ import annotations

import os

import httpx

from apps.notify.base import Delivery, Driver, DeliveryError, Message, drivers

OPTIONS = {"url", "url_env", "timeout_seconds", "headers"}
DEFAULT_ENV = "NOTIFY_WEBHOOK_URL"
DEFAULT_TIMEOUT = 10


def _is_http_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def _is_positive_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@drivers.register("webhook")
class WebhookDriver(Driver):
    name = "webhook"

    def validate_config(self, config: dict) -> list[str]:
        messages = [
            f"unknown option for driver webhook: {key}" for key in sorted(set(config) - OPTIONS)
        ]
        if "url" in config and not _is_http_url(config["url"]):
            messages.append("url must be a string starting with http:// or https://")
        if "url_env" in config and not (
            isinstance(config["url_env"], str) and config["url_env"].strip()
        ):
            messages.append("url_env must be a non-empty string")
        if "timeout_seconds" in config and not _is_positive_number(config["timeout_seconds"]):
            messages.append("timeout_seconds must be a positive number")
        headers = config.get("headers")
        if "headers" in config and not (
            isinstance(headers, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
        ):
            messages.append("headers must be an object of strings")
        return messages

    def _url(self, config: dict) -> str:
        """The URL to post to; raises DeliveryError when none is configured."""
        if config.get("url"):
            return config["url"]
        if config.get("url_env"):
            # A named variable that is unset is a deployment mistake: do not fall
            # back to the default channel and notify the wrong people.
            url = os.environ.get(config["url_env"], "").strip()
            if not url:
                raise DeliveryError(
                    f"No webhook URL: environment variable {config['url_env']} is not set"
                )
            source = f"environment variable {config['url_env']}"
        else:
            url = os.environ.get(DEFAULT_ENV, "").strip()
            if not url:
                raise DeliveryError(
                    "No webhook URL: set NOTIFY_WEBHOOK_URL or the node's url/url_env"
                )
            source = f"environment variable {DEFAULT_ENV}"
        if not _is_http_url(url):
            raise DeliveryError(f"The webhook URL in {source} must start with http:// or https://")
        return url

    def send(self, *, message: Message, config: dict) -> list[Delivery]:
        """POSTs {"title", "body", "severity", "data"} and reports the outcome.

        Raises DeliveryError when no URL is configured; HTTP errors, timeouts
        and connection failures are returned as a failed Delivery."""
        url = self._url(config)
        timeout = config.get("timeout_seconds", DEFAULT_TIMEOUT)
        body = {
            "title": message.title,
            "body": message.body,
            "severity": message.severity,
            "data": message.data,
        }
        try:
            response = httpx.post(
                url, json=body, headers=config.get("headers") or {}, timeout=timeout
            )
        except httpx.TimeoutException as exc:
            return [Delivery(self.name, False, f"timeout after {timeout}s ({type(exc).__name__})")]
        except httpx.TransportError as exc:
            return [Delivery(self.name, False, f"connection failed ({type(exc).__name__})")]
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            # httpx's own messages include the URL, so only the error class is kept.
            return [Delivery(self.name, False, f"request failed ({type(exc).__name__})")]
        ok = response.is_success
        return [Delivery(self.name, ok, f"HTTP {response.status_code}")]
