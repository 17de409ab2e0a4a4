"""The local rule-based provider and the analysis services."""
from __future__ import annotations

import socket

import pytest

from apps.checkers.services import checks_run
from apps.intelligence.base import providers
from apps.intelligence.providers.local import LocalProvider
from apps.intelligence.services import analysis_run, analysis_validate

GiB = 2**30


def check(name, status, value, **details):
    message = f"{name} {value:.1f}% ({status})"
    return {"name": name, "status": status, "value": value, "unit": "%", "message": message, "details": details}


CPU_OK = check("cpu", "ok", 12.3, cpu_count=8)
MEMORY_OK = check("memory", "ok", 41.0, total_bytes=16 * GiB, available_bytes=9 * GiB)
DISK_OK = check("disk", "ok", 57.2, path="/", paths={"/": {"percent": 57.2, "status": "ok"}})
MEMORY_CRITICAL = check("memory", "critical", 96.1, total_bytes=16 * GiB, available_bytes=GiB // 2)
DISK_WARNING = check(
    "disk", "warning", 88.0, path="/var",
    paths={
        "/": {"percent": 40.0, "status": "ok", "total_bytes": 100 * GiB, "free_bytes": 60 * GiB},
        "/var": {"percent": 88.0, "status": "warning", "total_bytes": 50 * GiB, "free_bytes": 6 * GiB},
    },
)
CPU_CRITICAL = check("cpu", "critical", 97.5, cpu_count=4)
LOAD_WARNING = check("load", "warning", 150.0, load_1m=6.0, load_5m=5.0, load_15m=4.0, cpu_count=4)


def incident(title, *alerts, severity="critical", status="open"):
    return {"id": 7, "title": title, "severity": severity, "status": status, "alerts": list(alerts)}


def alert(name, host="web-01", labels=None, description="", status="firing"):
    return {"name": name, "severity": "critical", "status": status, "host": host,
            "description": description, "labels": labels or {"alertname": name}}


def analyze(checks, incident=None):
    return LocalProvider().analyze(incident=incident, checks=checks, config={})


def test_local_is_registered():
    assert providers.get("local") is LocalProvider
    assert LocalProvider.name == "local"


def test_healthy_checks_give_a_summary_with_the_numbers():
    result = analyze([CPU_OK, MEMORY_OK, DISK_OK])
    assert result["summary"] == "System healthy: cpu 12.3%, memory 41.0%, disk 57.2%, all within thresholds."
    assert result["severity"] == "ok"
    assert result["provider"] == "local"
    assert result["recommendations"] == [
        "No action needed: every check is within its thresholds (cpu 12.3%, memory 41.0%, disk 57.2%)."
    ]
    assert result["findings"] == {
        "checks": 3, "ok": 3, "warning": 0, "critical": 0, "problems": 0, "alerts": 0, "alerts_firing": 0,
    }


def test_problems_are_listed_worst_first_with_their_numbers():
    result = analyze([CPU_OK, DISK_WARNING, MEMORY_CRITICAL])
    assert result["summary"] == "2 problems: memory critical at 96.1%, disk warning at 88.0% on /var."
    assert result["severity"] == "critical"
    assert result["probable_cause"] == "Memory pressure: memory critical at 96.1%, the worst of 2 problems."
    assert result["findings"]["critical"] == 1
    assert result["findings"]["warning"] == 1
    assert result["findings"]["problems"] == 2


def test_recommendations_name_the_out_of_range_numbers():
    recommendations = analyze([CPU_OK, DISK_WARNING, MEMORY_CRITICAL])["recommendations"]
    assert len(recommendations) == 2
    memory, disk = recommendations
    assert memory.startswith("Reduce memory use (96.1% used, 512.0 MiB available of 16.0 GiB): ")
    # Only the path over its threshold is named, not the healthy root.
    assert disk.startswith("Free space on /var (88.0% used, 6.0 GiB free of 50.0 GiB): ")
    assert "du -xh /var" in disk
    assert not any("12.3" in r for r in recommendations)


def test_cpu_and_load_recommendations_carry_their_readings():
    cpu, load = analyze([CPU_CRITICAL, LOAD_WARNING])["recommendations"]
    assert cpu.startswith("Find what is using the CPU (97.5% busy across 4 CPUs): ")
    assert load.startswith("Shorten the run queue (load 6.0 on 4 CPUs, 150.0% of capacity): ")


def test_a_single_problem_is_singular():
    result = analyze([CPU_CRITICAL, MEMORY_OK])
    assert result["summary"] == "1 problem: cpu critical at 97.5%."
    assert result["probable_cause"] == "CPU saturation: cpu critical at 97.5%."


def test_an_unknown_check_gets_a_generic_recommendation():
    other = {"name": "latency", "status": "warning", "value": 250.0, "unit": "ms",
             "message": "p99 latency 250.0 ms", "details": {}}
    result = analyze([other])
    assert result["summary"] == "1 problem: latency warning at 250.0 ms."
    assert result["recommendations"] == ["Investigate latency (warning at 250.0 ms): p99 latency 250.0 ms"]


def test_firing_incident_on_a_healthy_host_points_at_the_alerting_host():
    firing = incident("HighCPUUsage on web-01", alert("HighCPUUsage", host="web-01"))
    result = analyze([CPU_OK, MEMORY_OK, DISK_OK], firing)
    assert result["severity"] == "critical"  # the incident's severity, though the checks are fine
    assert result["summary"] == (
        'Incident #7 "HighCPUUsage on web-01" (critical) is open, but this host looks healthy: '
        "cpu 12.3%, memory 41.0%, disk 57.2%, all within thresholds."
    )
    assert "the live cpu check does not confirm it (12.3%, ok)" in result["probable_cause"]
    assert result["recommendations"] == [
        "Look at web-01 directly: the alerts come from there, and this host looks fine "
        "(cpu 12.3%, memory 41.0%, disk 57.2%)."
    ]
    assert result["alert_topics"] == {"cpu": "not confirmed"}
    assert result["findings"]["alerts_firing"] == 1


def test_an_alert_about_this_host_that_checks_do_not_see_suggests_it_cleared():
    here = socket.gethostname()
    firing = incident(f"HighCPUUsage on {here}", alert("HighCPUUsage", host=here))
    (recommendation,) = analyze([CPU_OK], firing)["recommendations"]
    assert recommendation.startswith("The alerts are about this host, which looks fine now (cpu 12.3%)")


def test_live_checks_confirm_a_matching_alert():
    firing = incident(
        "NodeMemoryHigh on web-01",
        alert("NodeMemoryHigh", labels={"alertname": "NodeMemoryHigh", "instance": "web-01:9100"}),
    )
    result = analyze([CPU_OK, MEMORY_CRITICAL], firing)
    assert result["summary"] == (
        'Incident #7 "NodeMemoryHigh on web-01" (critical) is open and this host has 1 problem: '
        "memory critical at 96.1%."
    )
    assert result["probable_cause"] == (
        "Memory pressure: memory critical at 96.1%. The incident's alerts mention memory, "
        "and the live memory check confirms it (critical at 96.1%)."
    )
    assert result["alert_topics"] == {"memory": "confirmed"}


def test_alert_topics_are_read_from_labels_and_descriptions():
    firing = incident(
        "Something on db-02",
        alert("NodeSpaceAlert", host="db-02", labels={"mountpoint": "/var"}),
        alert("Pressure", host="db-02", description="OOM killer invoked"),
    )
    result = analyze([MEMORY_OK, DISK_WARNING], firing)
    assert result["alert_topics"] == {"memory": "not confirmed", "disk": "confirmed"}
    assert "the live disk check confirms it (warning at 88.0% on /var)" in result["probable_cause"]
    assert "the live memory check does not confirm it (41.0%, ok)" in result["probable_cause"]


def test_an_alert_about_an_unchecked_resource_asks_for_that_check():
    firing = incident("HostHighLoad on web-01", alert("HostHighLoad"))
    result = analyze([CPU_OK], firing)
    assert result["alert_topics"] == {"load": "not checked"}
    assert "The incident's alerts mention load, but no load check was run to confirm it." in result["probable_cause"]
    assert 'Run the load check to confirm the alert: add "load" to a context node\'s include.' in result["recommendations"]


def test_problems_unrelated_to_the_alerts_also_point_at_the_alerting_host():
    firing = incident("HighCPUUsage on web-01", alert("HighCPUUsage"))
    result = analyze([CPU_OK, DISK_WARNING], firing)
    assert result["recommendations"][0].startswith("Free space on /var (88.0% used")
    assert result["recommendations"][1] == (
        "Look at web-01 as well: the alerts there (cpu) are not confirmed by this host's checks, "
        "so its problems may be unrelated."
    )


def test_an_incident_without_alert_details_is_read_from_its_title():
    # The ingest node's incident carries a count, not the alerts themselves.
    summary_only = {"id": 3, "title": "DiskFull on web-01", "severity": "warning", "status": "open", "alert_count": 1}
    result = analyze([DISK_OK], summary_only)
    assert result["alert_topics"] == {"disk": "not confirmed"}
    assert result["severity"] == "warning"
    assert result["recommendations"] == [
        'Look at the host that raised incident #3 "DiskFull on web-01" directly: this host looks fine (disk 57.2%).'
    ]


def test_an_incident_without_checks_is_summarised_from_its_alerts():
    firing = incident("HighCPUUsage on web-01", alert("HighCPUUsage"), alert("HighCPUUsage", host="web-02"))
    result = analyze([], firing)
    assert result["summary"] == (
        'Incident #7 "HighCPUUsage on web-01" (critical) is open with 2 firing alerts: '
        "HighCPUUsage on web-01, HighCPUUsage on web-02; no live checks were run."
    )
    assert result["severity"] == "critical"
    assert result["recommendations"][-1] == (
        "Add a context node (cpu, memory, disk) before the analysis to check the host live, "
        "or look at web-01, web-02 directly."
    )


def test_a_resolved_incident_does_not_raise_the_severity():
    resolved = incident("HighCPUUsage on web-01", alert("HighCPUUsage", status="resolved"), status="resolved")
    result = analyze([CPU_OK], resolved)
    assert result["severity"] == "ok"
    assert result["summary"] == (
        'System healthy: cpu 12.3%, all within thresholds; incident #7 "HighCPUUsage on web-01" is resolved.'
    )
    assert result["alert_topics"] == {}


def test_info_incident_maps_to_ok_and_warning_incident_to_warning():
    assert analyze([CPU_OK], incident("Deploy done", severity="info"))["severity"] == "ok"
    assert analyze([CPU_OK], incident("Deploy done", severity="warning"))["severity"] == "warning"


def test_the_worst_result_wins_when_a_check_ran_twice():
    result = analyze([MEMORY_OK, MEMORY_CRITICAL])
    assert result["findings"]["checks"] == 1
    assert result["summary"] == "1 problem: memory critical at 96.1%."


def test_nothing_to_analyse_is_said_plainly():
    result = analyze([], None)
    assert result["summary"] == "Nothing to analyse: no check results and no incident."
    assert result["severity"] == "ok"
    assert result["recommendations"] == ["No action needed: nothing was reported."]


def test_local_rejects_unknown_options():
    assert LocalProvider().validate_config({}) == []
    assert LocalProvider().validate_config({"model": "x", "api_key": "y"}) == [
        "unknown option for provider local: api_key",
        "unknown option for provider local: model",
    ]


@pytest.mark.parametrize(
    "config, messages",
    [
        ({}, []),
        ({"provider": "local"}, []),
        ({"provider": "local", "required": False}, []),
        ({"provider": "gpt"}, ["unknown provider: gpt"]),
        ({"provider": 3}, ["provider must be a string naming a provider (known: local, openai)"]),
        ({"provider": "local", "temperature": 0}, ["unknown option for provider local: temperature"]),
        ({"temperature": 0}, ["unknown option for provider local: temperature"]),
        ([], ["intelligence config must be an object"]),
    ],
)
def test_analysis_validate(config, messages):
    assert analysis_validate(config=config) == messages


def test_analysis_run_refuses_an_unknown_provider():
    with pytest.raises(ValueError) as excinfo:
        analysis_run(provider="gpt", config={"provider": "gpt"}, incident=None, checks=[CPU_OK])
    assert str(excinfo.value) == "unknown provider: gpt"


def test_analysis_run_refuses_options_the_provider_rejects():
    with pytest.raises(ValueError) as excinfo:
        analysis_run(provider="local", config={"provider": "local", "model": "x"}, incident=None, checks=[CPU_OK])
    assert str(excinfo.value) == "unknown option for provider local: model"


def test_analysis_run_on_real_checks_names_every_reading():
    checks = checks_run(include=["cpu", "memory", "disk"], thresholds={}, options={"cpu": {"interval": 0.05}})
    result = analysis_run(provider="local", config={"provider": "local"}, incident=None, checks=checks)
    assert result["provider"] == "local"
    # The machine's real load decides which form the summary takes: both are checked.
    problems = [reading for reading in checks if reading["status"] != "ok"]
    for reading in problems:
        assert f"{reading['name']} {reading['status']} at {reading['value']:.1f}%" in result["summary"]
    for reading in checks if not problems else []:
        assert f"{reading['name']} {reading['value']:.1f}%" in result["summary"]
    worst = max(("ok", "warning", "critical").index(c["status"]) for c in checks)
    assert result["severity"] == ("ok", "warning", "critical")[worst]


def test_analysis_run_on_forced_real_problems_recommends_fixes_with_the_numbers():
    checks = checks_run(
        include=["memory", "disk"],
        thresholds={"memory": {"warning": 0, "critical": 0}, "disk": {"warning": 0, "critical": 1000}},
        options={},
    )
    memory, disk = checks
    result = analysis_run(provider="local", config={}, incident=None, checks=checks)
    assert result["summary"] == (
        f"2 problems: memory critical at {memory['value']:.1f}%, disk warning at {disk['value']:.1f}% on /."
    )
    assert result["recommendations"][0].startswith(f"Reduce memory use ({memory['value']:.1f}% used, ")
    assert result["recommendations"][1].startswith(f"Free space on / ({disk['value']:.1f}% used, ")
