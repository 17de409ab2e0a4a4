"""Helpers shared by alert parsers: normalising severities, statuses and hosts."""
from __future__ import annotations

from urllib.parse import urlsplit

from apps.alerts.parsers.base import ParsedAlert, PayloadError, fingerprint_for

CRITICAL, WARNING, INFO = "critical", "warning", "info"
SEVERITY_RANK = {INFO: 0, WARNING: 1, CRITICAL: 2}

# Words used by common alert sources (Alertmanager rules, Grafana, Zabbix,
# PagerDuty, syslog) for the three levels we keep.
_SEVERITY_WORDS = {
    CRITICAL: {
        "critical", "crit", "fatal", "emergency", "emerg", "alert", "page", "disaster",
        "high", "major", "error", "err", "severe", "p1", "p2", "sev1", "sev2",
    },
    WARNING: {"warning", "warn", "medium", "moderate", "minor", "average", "p3", "sev3"},
    INFO: {
        "info", "informational", "information", "notice", "low", "none", "debug", "ok",
        "p4", "p5", "sev4", "sev5",
    },
}
_SEVERITY_OF_WORD = {word: level for level, words in _SEVERITY_WORDS.items() for word in words}

FIRING, RESOLVED = "firing", "resolved"
_STATUS_OF_WORD = {
    "firing": FIRING, "alerting": FIRING, "problem": FIRING, "triggered": FIRING,
    "open": FIRING, "active": FIRING, "no_data": FIRING, "nodata": FIRING,
    "resolved": RESOLVED, "ok": RESOLVED, "normal": RESOLVED, "recovered": RESOLVED,
    "closed": RESOLVED, "inactive": RESOLVED,
}


def normalise_severity(value: object, default: str = WARNING) -> str:
    """critical / warning / info for a source's severity word; ``default`` when
    the value is missing or not a word we know."""
    if value is None or value == "":
        return default
    return _SEVERITY_OF_WORD.get(str(value).strip().lower(), default)


def worst_severity(severities: list[str]) -> str:
    """The most severe of normalised severities (info when the list is empty)."""
    return max(severities, key=lambda s: SEVERITY_RANK.get(s, 0), default=INFO)


def normalise_status(value: object, default: str = FIRING) -> str:
    """firing / resolved for a source's status word; raises PayloadError for a
    word that means neither."""
    if value is None or value == "":
        return default
    status = _STATUS_OF_WORD.get(str(value).strip().lower())
    if status is None:
        raise PayloadError(f"Unknown alert status: {value} (expected firing or resolved)")
    return status


def host_from_instance(instance: object) -> str:
    """The host part of a Prometheus-style ``instance`` label: ``web-01:9100``,
    ``[::1]:9100`` and ``https://web-01/health`` all give the bare host."""
    if not isinstance(instance, str) or not instance.strip():
        return ""
    instance = instance.strip()
    if "://" in instance:
        return urlsplit(instance).hostname or ""
    if instance.startswith("["):  # bracketed IPv6, with or without a port
        return instance[1:].split("]", 1)[0]
    host, sep, port = instance.rpartition(":")
    # Only one colon and a numeric suffix means host:port; several colons is a bare IPv6.
    if sep and port.isdigit() and ":" not in host:
        return host
    return instance


def text(value: object) -> str:
    """A payload value as a stripped string ('' for None and non-scalars)."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value).strip()
    return ""


def label_dict(value: object, what: str) -> dict:
    """A labels/annotations object as a dict of strings; raises PayloadError when
    it is present but not an object."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{what} must be an object")
    return {str(k): v if isinstance(v, str) else str(v) for k, v in value.items()}


def source_fingerprint(source: str, key: str) -> str:
    """A fingerprint from a source's own identifier for an alert (``pagerduty:PGR0VU2``);
    too long an identifier is hashed so the result always fits the fingerprint column."""
    fingerprint = f"{source}:{key}"
    if len(fingerprint) <= 128:
        return fingerprint
    return fingerprint_for(source, "", {"key": key})


def _bounded_fingerprint(given: str, source: str, name: str, labels: dict) -> str:
    """The alert's own fingerprint when it fits the fingerprint column (128 characters);
    a longer one hashed (distinct ones stay distinct); one from its name and labels when
    it has none."""
    if not given:
        return fingerprint_for(source, name, labels)
    if len(given) <= 128:
        return given
    return fingerprint_for(source, "", {"fingerprint": given})


def alertmanager_group_key(payload: object) -> str:
    """The ``groupKey`` of an Alertmanager-shaped webhook: the alert group it
    notifies about ("" when it has none)."""
    key = payload.get("groupKey") if isinstance(payload, dict) else None
    return key if isinstance(key, str) else ""


def alertmanager_shaped_alerts(
    payload: dict, *, source: str, label: str, fallback_name: str = "", value_key: str | None = None
) -> list[ParsedAlert]:
    """The alerts of an Alertmanager-shaped webhook (Alertmanager's own, and
    Grafana's unified alerting, which copies it).

    ``label`` names the source in errors; ``fallback_name`` names an alert
    without an alertname label; ``value_key`` is a per-alert field used as the
    description when the annotations have none. Raises PayloadError.
    """
    common_labels = payload.get("commonLabels")
    common_labels = common_labels if isinstance(common_labels, dict) else {}
    parsed = []
    for index, alert in enumerate(payload["alerts"], start=1):
        if not isinstance(alert, dict):
            raise PayloadError(f"{label} alert #{index} is not an object")
        labels = label_dict(alert.get("labels"), f"{label} alert #{index} labels")
        annotations = label_dict(alert.get("annotations"), f"{label} alert #{index} annotations")
        name = text(labels.get("alertname")) or text(common_labels.get("alertname")) or fallback_name
        if not name:
            raise PayloadError(f"{label} alert #{index} has no alertname label")
        parsed.append(
            ParsedAlert(
                fingerprint=_bounded_fingerprint(text(alert.get("fingerprint")), source, name, labels),
                name=name,
                severity=normalise_severity(labels.get("severity")),
                status=normalise_status(alert.get("status") or payload.get("status")),
                host=host_from_instance(labels.get("instance")) or text(labels.get("host")),
                description=text(annotations.get("description"))
                or text(annotations.get("summary"))
                or (text(alert.get(value_key)) if value_key else ""),
                labels=labels,
            )
        )
    return parsed
