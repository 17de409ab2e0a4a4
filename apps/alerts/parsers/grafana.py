"""Grafana alert webhooks: unified alerting and the legacy (dashboard) format."""
from __future__ import annotations

from apps.alerts.parsers.base import ParsedAlert, Parser, PayloadError, fingerprint_for, parsers
from apps.alerts.parsers.common import (
    FIRING,
    RESOLVED,
    alertmanager_group_key,
    alertmanager_shaped_alerts,
    host_from_instance,
    label_dict,
    normalise_severity,
    text,
)

# Legacy alert states that mean the condition is over; alerting, no_data and
# pending all mean someone may need to look.
_LEGACY_RESOLVED_STATES = {"ok", "paused"}


@parsers.register("grafana")
class GrafanaParser(Parser):
    name = "grafana"

    def detect(self, payload: dict) -> bool:
        if not isinstance(payload, dict):
            return False
        return self._is_unified(payload) or self._is_legacy(payload)

    @staticmethod
    def _is_unified(payload: dict) -> bool:
        return isinstance(payload.get("alerts"), list) and (
            "orgId" in payload or ("state" in payload and "title" in payload)
        )

    @staticmethod
    def _is_legacy(payload: dict) -> bool:
        return "state" in payload and ("ruleName" in payload or "ruleId" in payload)

    def parse(self, payload: dict) -> list[ParsedAlert]:
        if not isinstance(payload, dict):
            raise PayloadError("Not a Grafana payload: not an object")
        if isinstance(payload.get("alerts"), list):
            return self._parse_unified(payload)
        if self._is_legacy(payload):
            return [self._parse_legacy(payload)]
        raise PayloadError("Not a Grafana payload: no alerts list and no ruleName/state")

    def _parse_unified(self, payload: dict) -> list[ParsedAlert]:
        return alertmanager_shaped_alerts(
            payload,
            source=self.name,
            label="Grafana",
            fallback_name=text(payload.get("title")),
            value_key="valueString",
        )

    def _parse_legacy(self, payload: dict) -> ParsedAlert:
        name = text(payload.get("ruleName")) or text(payload.get("title"))
        if not name:
            raise PayloadError("Grafana alert has no ruleName")
        tags = label_dict(payload.get("tags"), "Grafana alert tags")
        matches = payload.get("evalMatches") or []
        if not isinstance(matches, list):
            raise PayloadError("Grafana evalMatches must be a list")
        matches = [m for m in matches if isinstance(m, dict)]
        match_tags = [m["tags"] for m in matches if isinstance(m.get("tags"), dict)]
        host = host_from_instance(tags.get("instance")) or text(tags.get("host"))
        for mt in match_tags:
            host = host or host_from_instance(mt.get("instance")) or text(mt.get("host"))
        state = text(payload.get("state")).lower()
        status = RESOLVED if state in _LEGACY_RESOLVED_STATES else FIRING
        values = ", ".join(
            f"{text(m.get('metric')) or 'value'}={text(m.get('value'))}" for m in matches
        )
        description = text(payload.get("message"))
        if values:
            description = f"{description} ({values})" if description else values
        # The fingerprint leaves out state and matches so "ok" resolves the "alerting" alert.
        identity = {"ruleId": text(payload.get("ruleId")), "tags": tags}
        return ParsedAlert(
            fingerprint=fingerprint_for(self.name, name, identity),
            name=name,
            severity=normalise_severity(tags.get("severity")),
            status=status,
            host=host,
            description=description,
            labels=tags,
        )

    def group_key(self, payload: dict) -> str:
        return alertmanager_group_key(payload)

    def sample(self) -> dict:
        labels = {
            "alertname": "High CPU usage",
            "grafana_folder": "Servers",
            "instance": "web-01:9100",
            "severity": "critical",
        }
        annotations = {
            "summary": "High CPU usage on web-01",
            "description": "CPU usage on web-01 is 96.8%, above the 90% threshold.",
        }
        return {
            "receiver": "ops-pipeline",
            "status": "firing",
            "orgId": 1,
            "alerts": [
                {
                    "status": "firing",
                    "labels": labels,
                    "annotations": annotations,
                    "startsAt": "2025-01-15T10:30:00Z",
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "https://grafana.example.com/alerting/grafana/cpu-high/view",
                    "fingerprint": "a1b2c3d4e5f60718",
                    "silenceURL": "https://grafana.example.com/alerting/silence/new",
                    "dashboardURL": "https://grafana.example.com/d/node-exporter",
                    "panelURL": "https://grafana.example.com/d/node-exporter?viewPanel=3",
                    "values": {"B": 96.8, "C": 1},
                    "valueString": "[ var='B' labels={instance=web-01:9100} value=96.8 ]",
                }
            ],
            "groupLabels": {"alertname": "High CPU usage"},
            "commonLabels": labels,
            "commonAnnotations": annotations,
            "externalURL": "https://grafana.example.com/",
            "version": "1",
            "groupKey": '{}:{alertname="High CPU usage"}',
            "truncatedAlerts": 0,
            "title": "[FIRING:1] High CPU usage Servers (web-01:9100 critical)",
            "state": "alerting",
            "message": "**Firing**\n\nValue: B=96.8\nLabels:\n - alertname = High CPU usage\n"
            " - instance = web-01:9100\n - severity = critical\n",
        }
