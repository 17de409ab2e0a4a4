"""Prometheus Alertmanager webhook payloads (webhook format version 4)."""
from __future__ import annotations

from apps.alerts.parsers.base import ParsedAlert, Parser, PayloadError, fingerprint_for, parsers
from apps.alerts.parsers.common import (
    host_from_instance,
    label_dict,
    normalise_severity,
    normalise_status,
    text,
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
        group_status = payload.get("status")
        common_labels = payload.get("commonLabels")
        common_labels = common_labels if isinstance(common_labels, dict) else {}
        parsed = []
        for index, alert in enumerate(payload["alerts"], start=1):
            if not isinstance(alert, dict):
                raise PayloadError(f"Alertmanager alert #{index} is not an object")
            labels = label_dict(alert.get("labels"), f"Alertmanager alert #{index} labels")
            annotations = label_dict(
                alert.get("annotations"), f"Alertmanager alert #{index} annotations"
            )
            name = text(labels.get("alertname")) or text(common_labels.get("alertname"))
            if not name:
                raise PayloadError(f"Alertmanager alert #{index} has no alertname label")
            fingerprint = text(alert.get("fingerprint")) or fingerprint_for(self.name, name, labels)
            parsed.append(
                ParsedAlert(
                    fingerprint=fingerprint,
                    name=name,
                    severity=normalise_severity(labels.get("severity")),
                    status=normalise_status(alert.get("status") or group_status),
                    host=host_from_instance(labels.get("instance")) or text(labels.get("host")),
                    description=text(annotations.get("description"))
                    or text(annotations.get("summary")),
                    labels=labels,
                )
            )
        return parsed

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
