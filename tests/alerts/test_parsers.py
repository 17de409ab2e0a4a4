"""Alert parsers: detection, reading each source's format, and the samples."""
from __future__ import annotations

import copy

import pytest

from apps.alerts.parsers import PayloadError, parsers
from apps.alerts.parsers.common import host_from_instance, normalise_severity
from apps.alerts.services import alert_source_detect


def parser(name):
    return parsers.get(name)()


def alertmanager_payload(status="firing", **label_overrides):
    payload = parser("alertmanager").sample()
    payload["status"] = status
    payload["alerts"][0]["status"] = status
    payload["alerts"][0]["labels"].update(label_overrides)
    return payload


LEGACY_GRAFANA = {
    "dashboardId": 1,
    "evalMatches": [
        {"value": 97.5, "metric": "cpu_usage", "tags": {"instance": "web-01:9100"}},
    ],
    "message": "CPU above 90% on web servers",
    "orgId": 1,
    "panelId": 2,
    "ruleId": 7,
    "ruleName": "High CPU",
    "ruleUrl": "https://grafana.example.com/d/abc?panelId=2",
    "state": "alerting",
    "tags": {"severity": "critical", "team": "ops"},
    "title": "[Alerting] High CPU",
}


SOURCES = ["alertmanager", "datadog", "generic", "grafana", "pagerduty"]
# Parsers that must only claim their own format; generic, the fallback, accepts most objects.
SPECIFIC = [name for name in SOURCES if name != "generic"]


def test_every_source_has_a_registered_parser():
    assert parsers.keys() == SOURCES


@pytest.mark.parametrize("name", SOURCES)
def test_every_sample_is_detected_as_its_own_source(name):
    assert alert_source_detect(payload=parser(name).sample()) == name


@pytest.mark.parametrize("name", SPECIFIC)
@pytest.mark.parametrize("other", SOURCES)
def test_a_specific_parser_claims_no_other_sources_sample(name, other):
    assert parser(name).detect(parser(other).sample()) is (name == other)


@pytest.mark.parametrize(
    "payload",
    [
        {"title": "Deploy finished", "event_type": "deploy", "host": "web-01"},
        {"name": "Backup failed", "event": "backup", "host": "db-01"},
        {"alert": "Disk full", "org": {"name": "ops"}, "hostname": "db-02"},
        {"name": "Queue backlog", "state": "alerting", "alerts": []},
    ],
    ids=["event_type", "event-string", "org-without-event_type", "state-without-rule"],
)
def test_generic_stays_the_fallback_for_lookalike_payloads(payload):
    assert alert_source_detect(payload=payload) == "generic"


@pytest.mark.parametrize("name", SOURCES)
def test_every_sample_parses_to_a_firing_high_cpu_alert_on_web_01(name):
    [alert] = parser(name).parse(parser(name).sample())
    assert alert.status == "firing"
    assert alert.severity == "critical"
    assert alert.host == "web-01"
    assert "CPU" in alert.name
    assert alert.description


def test_alertmanager_reads_name_severity_host_and_description_from_labels():
    [alert] = parser("alertmanager").parse(alertmanager_payload())
    assert alert.name == "HighCPUUsage"
    assert alert.fingerprint == "3f5c2a9d8e7b6a41"  # the alert's own fingerprint
    assert alert.host == "web-01"  # port stripped from the instance label
    assert alert.description.startswith("CPU usage on web-01")
    assert alert.labels["job"] == "node"


def test_alertmanager_without_fingerprint_gets_a_stable_one_independent_of_status():
    firing, resolved = alertmanager_payload("firing"), alertmanager_payload("resolved")
    for payload in (firing, resolved):
        del payload["alerts"][0]["fingerprint"]
    [a] = parser("alertmanager").parse(firing)
    [b] = parser("alertmanager").parse(resolved)
    assert a.fingerprint == b.fingerprint
    assert (a.status, b.status) == ("firing", "resolved")


@pytest.mark.parametrize("source", ["alertmanager", "grafana"])
def test_a_fingerprint_longer_than_its_column_is_hashed_and_distinct_ones_stay_distinct(source):
    from apps.alerts.models import Alert

    limit = Alert._meta.get_field("fingerprint").max_length
    fingerprints = []
    for given in ("a" * (limit + 1), "a" * limit + "b", "y" * 5000):
        payload = parser(source).sample()
        payload["alerts"][0]["fingerprint"] = given
        [alert] = parser(source).parse(payload)
        fingerprints.append(alert.fingerprint)
    assert all(len(fp) <= limit for fp in fingerprints) and len(set(fingerprints)) == 3
    payload = parser(source).sample()
    payload["alerts"][0]["fingerprint"] = "f" * limit  # one that fits is kept as sent
    assert parser(source).parse(payload)[0].fingerprint == "f" * limit


def test_alertmanager_falls_back_to_host_label_summary_and_warning():
    payload = alertmanager_payload()
    alert = payload["alerts"][0]
    alert["labels"] = {"alertname": "DiskFull", "host": "db-02"}
    alert["annotations"] = {"summary": "Disk almost full"}
    [parsed] = parser("alertmanager").parse(payload)
    assert (parsed.host, parsed.description, parsed.severity) == ("db-02", "Disk almost full", "warning")


def test_alertmanager_alert_without_alertname_is_a_payload_error():
    payload = alertmanager_payload()
    payload["commonLabels"] = {}
    del payload["alerts"][0]["labels"]["alertname"]
    with pytest.raises(PayloadError, match="no alertname"):
        parser("alertmanager").parse(payload)


def test_alertmanager_does_not_claim_grafana_payloads():
    assert not parser("alertmanager").detect(parser("grafana").sample())
    assert not parser("alertmanager").detect(LEGACY_GRAFANA)


def test_grafana_unified_reads_labels_and_annotations():
    [alert] = parser("grafana").parse(parser("grafana").sample())
    assert alert.name == "High CPU usage"
    assert alert.fingerprint == "a1b2c3d4e5f60718"
    assert alert.labels["grafana_folder"] == "Servers"


def test_grafana_unified_uses_value_string_when_there_is_no_description():
    payload = parser("grafana").sample()
    payload["alerts"][0]["annotations"] = {}
    [alert] = parser("grafana").parse(payload)
    assert "value=96.8" in alert.description


def test_grafana_legacy_alerting_is_one_firing_alert():
    assert alert_source_detect(payload=LEGACY_GRAFANA) == "grafana"
    [alert] = parser("grafana").parse(LEGACY_GRAFANA)
    assert alert.name == "High CPU"
    assert alert.status == "firing"
    assert alert.severity == "critical"
    assert alert.host == "web-01"  # from the eval match's tags
    assert "cpu_usage=97.5" in alert.description


def test_grafana_legacy_ok_resolves_the_same_alert():
    ok = copy.deepcopy(LEGACY_GRAFANA)
    ok.update(state="ok", evalMatches=[], title="[OK] High CPU")
    [firing] = parser("grafana").parse(LEGACY_GRAFANA)
    [resolved] = parser("grafana").parse(ok)
    assert resolved.status == "resolved"
    assert resolved.fingerprint == firing.fingerprint


def test_generic_accepts_alternative_field_names():
    [alert] = parser("generic").parse(
        {"title": "Memory high", "server": "web-02", "message": "92% used", "severity": "WARN"}
    )
    assert (alert.name, alert.host, alert.description, alert.severity, alert.status) == (
        "Memory high", "web-02", "92% used", "warning", "firing",
    )


def test_generic_reads_a_list_of_alerts():
    payload = {"alerts": [{"alert": "A", "hostname": "h1"}, {"name": "B", "status": "resolved"}]}
    assert alert_source_detect(payload=payload) == "generic"
    a, b = parser("generic").parse(payload)
    assert (a.name, a.host, b.name, b.status) == ("A", "h1", "B", "resolved")


def test_generic_fingerprint_depends_on_host_but_not_status():
    p = parser("generic")
    [web1] = p.parse({"name": "CPU", "host": "web-01"})
    [web1_resolved] = p.parse({"name": "CPU", "host": "web-01", "status": "resolved"})
    [web2] = p.parse({"name": "CPU", "host": "web-02"})
    assert web1.fingerprint == web1_resolved.fingerprint != web2.fingerprint


def test_generic_payload_with_only_a_server_is_still_an_alert():
    [alert] = parser("generic").parse({"server": "web-01"})
    assert alert.host == "web-01"
    assert alert.name


def test_generic_rejects_an_unknown_status():
    with pytest.raises(PayloadError, match="Unknown alert status: exploded"):
        parser("generic").parse({"name": "x", "status": "exploded"})


def test_generic_rejects_list_items_that_are_not_alerts():
    with pytest.raises(PayloadError, match="Alert #2"):
        parser("generic").parse({"alerts": [{"name": "a"}, {"labels": {}}]})


def test_generic_rejects_labels_that_are_not_an_object():
    with pytest.raises(PayloadError, match="labels must be an object"):
        parser("generic").parse({"name": "x", "labels": ["a"]})


def test_unrecognisable_payload_is_reported():
    with pytest.raises(PayloadError, match="Could not recognise the alert payload format"):
        alert_source_detect(payload={"foo": "bar"})


@pytest.mark.parametrize(
    "raw, expected",
    [("CRITICAL", "critical"), ("high", "critical"), ("P1", "critical"), ("warn", "warning"),
     ("minor", "warning"), ("info", "info"), ("low", "info"), (None, "warning"),
     ("bogus", "warning")],
)
def test_severity_is_normalised_to_three_levels(raw, expected):
    assert normalise_severity(raw) == expected


@pytest.mark.parametrize(
    "instance, host",
    [("web-01:9100", "web-01"), ("web-01", "web-01"), ("10.0.0.5:9100", "10.0.0.5"),
     ("[::1]:9100", "::1"), ("fe80::1", "fe80::1"), ("https://web-01.example.com/health", "web-01.example.com")],
)
def test_host_is_taken_from_the_instance_label(instance, host):
    assert host_from_instance(instance) == host
