"""Simple JSON alerts, the fallback for anything that names an alert or a host."""
from __future__ import annotations

from apps.alerts.parsers.base import ParsedAlert, Parser, PayloadError, fingerprint_for, parsers
from apps.alerts.parsers.common import label_dict, normalise_severity, normalise_status, text

NAME_KEYS = ("name", "title", "alert")
HOST_KEYS = ("host", "server", "hostname")
# A payload that only names a host (`--payload '{"server": "web-01"}'`) still makes an alert.
DEFAULT_NAME = "Manual alert"


@parsers.register("generic")
class GenericParser(Parser):
    name = "generic"
    fallback = True  # tried last when detecting: it accepts almost anything

    def detect(self, payload: dict) -> bool:
        if not isinstance(payload, dict):
            return False
        if self._looks_like_alert(payload):
            return True
        alerts = payload.get("alerts")
        return isinstance(alerts, list) and any(
            isinstance(a, dict) and self._looks_like_alert(a) for a in alerts
        )

    @staticmethod
    def _looks_like_alert(obj: dict) -> bool:
        return any(k in obj for k in NAME_KEYS) or "server" in obj or "host" in obj

    def parse(self, payload: dict) -> list[ParsedAlert]:
        if not isinstance(payload, dict):
            raise PayloadError("Alert payload must be a JSON object")
        if isinstance(payload.get("alerts"), list) and not self._looks_like_alert(payload):
            items = payload["alerts"]
        elif self._looks_like_alert(payload):
            items = [payload]
        else:
            raise PayloadError("Not a generic alert: expected a name, title, alert or host field")
        return [self._parse_one(item, index) for index, item in enumerate(items, start=1)]

    def _parse_one(self, item: object, index: int) -> ParsedAlert:
        if not isinstance(item, dict):
            raise PayloadError(f"Alert #{index} is not an object")
        if not self._looks_like_alert(item):
            raise PayloadError(f"Alert #{index} has no name, title, alert or host field")
        name = next((text(item.get(k)) for k in NAME_KEYS if text(item.get(k))), DEFAULT_NAME)
        host = next((text(item.get(k)) for k in HOST_KEYS if text(item.get(k))), "")
        labels = label_dict(item.get("labels"), f"Alert #{index} labels")
        fingerprint = text(item.get("fingerprint"))
        if not fingerprint or len(fingerprint) > 128:
            # Status stays out of the identity so a resolved alert finds its firing one.
            fingerprint = fingerprint_for(self.name, name, {"host": host, "labels": labels})
        return ParsedAlert(
            fingerprint=fingerprint,
            name=name,
            severity=normalise_severity(item.get("severity")),
            status=normalise_status(item.get("status")),
            host=host,
            description=text(item.get("description")) or text(item.get("message")),
            labels=labels,
        )

    def sample(self) -> dict:
        return {
            "name": "High CPU usage",
            "severity": "critical",
            "status": "firing",
            "host": "web-01",
            "description": "CPU usage on web-01 has been above 90% for 5 minutes (current: 95.2%).",
            "labels": {"service": "web", "environment": "production"},
        }
