"""Prometheus Alertmanager webhook payloads (webhook format version 4)."""
from __future__ import annotations

from apps.alerts.parsers.base import ParsedAlert, Parser, PayloadError, parsers
from apps.alerts.parsers.common import (
    alertmanager_group_key,
    alertmanager_shaped_alerts,
)


@parsers.register("alertmanager")
class AlertmanagerParser(Parser):
    name = "alertmanager"

    def detect(self, payload: dict) -> bool:
        if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
            return False
        # Grafana's unified alerting sends an Alertmanager-shaped payload plus these fields.
        if "orgId" in payload or ("state" in payload and "title" in payload):
            return False
        return str(payload.get("version")) == "4" or (
            "receiver" in payload and "groupKey" in payload
        )

    def parse(self, payload: dict) -> list[ParsedAlert]:
        if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
            raise PayloadError("Not an Alertmanager payload: no alerts list")
        return alertmanager_shaped_alerts(payload, source=self.name, label="Alertmanager")

    def group_key(self, payload: dict) -> str:
        return alertmanager_group_key(payload)

    def sample(self) -> dict:
        labels = {
            "alertname": "HighCPUUsage",
            "instance": "web-01:9100",
            "job": "node",
            "severity": "critical",
        }
        return {
            "version": "4",
            "groupKey": '{}:{alertname="HighCPUUsage"}',
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "ops-pipeline",
            "groupLabels": {"alertname": "HighCPUUsage"},
            "commonLabels": labels,
            "commonAnnotations": {
                "summary": "High CPU usage on web-01",
                "description": "CPU usage on web-01 has been above 90% for 5 minutes "
                "(current: 97.3%).",
            },
            "externalURL": "http://alertmanager.example.com:9093",
            "alerts": [
                {
                    "status": "firing",
                    "labels": labels,
                    "annotations": {
                        "summary": "High CPU usage on web-01",
                        "description": "CPU usage on web-01 has been above 90% for 5 minutes "
                        "(current: 97.3%).",
                    },
                    "startsAt": "2025-01-15T10:30:00Z",
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prometheus.example.com:9090/graph?g0.expr=node_cpu",
                    "fingerprint": "3f5c2a9d8e7b6a41",
                }
            ],
        }
