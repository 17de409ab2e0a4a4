"""Running and validating checks by name (apps/checkers/services.py)."""
from __future__ import annotations

import json

import pytest

from apps.checkers.services import checks_run, checks_validate

FAST = {"cpu": {"interval": 0.05}}
EVERY_CHECK = ["memory", "cpu", "disk", "load", "swap", "network", "processes"]


def test_checks_run_returns_one_result_per_check_in_include_order():
    results = checks_run(
        include=EVERY_CHECK, thresholds={}, options={**FAST, "processes": {"interval": 0.05}}
    )
    assert [r["name"] for r in results] == EVERY_CHECK
    for result in results:
        assert set(result) == {"name", "status", "value", "unit", "message", "details"}
        assert result["status"] in {"ok", "warning", "critical"}
    json.dumps(results)


def test_a_warning_override_alone_keeps_the_default_critical_limit():
    (result,) = checks_run(include=["disk"], thresholds={"disk": {"warning": 0}}, options={})
    # The default critical limit for disk is 95%.
    assert result["status"] == ("critical" if result["value"] >= 95 else "warning")
    if result["status"] == "warning":
        assert "critical at 95%" in result["message"]


def test_a_critical_override_alone_keeps_the_default_warning_limit():
    (result,) = checks_run(include=["memory"], thresholds={"memory": {"critical": 1000}}, options={})
    assert result["status"] == ("warning" if result["value"] >= 85 else "ok")


def test_thresholds_and_options_apply_per_check():
    results = checks_run(
        include=["cpu", "memory"],
        thresholds={"cpu": {"warning": 0, "critical": 0}, "memory": {"warning": 0, "critical": 1000}},
        options=FAST,
    )
    assert [r["status"] for r in results] == ["critical", "warning"]
    assert results[0]["details"]["interval_seconds"] == 0.05


def test_checks_run_refuses_what_validation_refuses():
    with pytest.raises(ValueError) as excinfo:
        checks_run(include=["cpu", "gpu"], thresholds={}, options=FAST)
    assert str(excinfo.value) == "unknown check: gpu"


def test_checks_run_reports_a_missing_disk_path(tmp_path):
    missing = str(tmp_path / "gone")
    with pytest.raises(ValueError) as excinfo:
        checks_run(include=["disk"], thresholds={}, options={"disk": {"paths": [missing]}})
    assert str(excinfo.value) == f"Disk path not found: {missing}"


def test_a_valid_configuration_has_no_messages():
    assert checks_validate(
        include=["cpu", "memory", "disk", "load"],
        thresholds={"cpu": {"warning": 70}, "disk": {"warning": 80, "critical": 90}},
        options={"cpu": {"interval": 1}, "disk": {"paths": ["/"]}},
    ) == []


def test_options_of_the_new_checks_validate_by_name():
    assert checks_validate(
        include=["swap", "network", "processes", "disk"],
        thresholds={"swap": {"warning": 40}, "network": {"critical": 3}, "processes": {"warning": 60}},
        options={"network": {"interfaces": ["lo"], "error_percent": 2}, "processes": {"top": 3, "interval": 1}},
    ) == []
    assert checks_validate(
        include=["swap", "network", "processes"],
        thresholds={"network": {"warning": 3}},
        options={"swap": {"x": 1}, "network": {"interfaces": []}, "processes": {"top": 0}},
    ) == [
        "threshold network.warning (3) must not be above network.critical (2)",
        "unknown option for check swap: x",
        "option interfaces for check network must name at least one interface",
        "option top for check processes must be a whole number from 1 to 50 (got 0)",
    ]


def test_checks_run_reports_a_missing_network_interface():
    with pytest.raises(ValueError) as excinfo:
        checks_run(include=["network"], thresholds={}, options={"network": {"interfaces": ["nope0"]}})
    assert str(excinfo.value) == "Network interface not found: nope0"


def test_unknown_check_is_reported_by_name():
    assert checks_validate(include=["cpu", "gpu"], thresholds={}, options={}) == ["unknown check: gpu"]


@pytest.mark.parametrize("include", [None, "cpu", 3, {"cpu": True}, ["cpu", 1], [None]])
def test_include_must_be_a_list_of_names(include):
    assert checks_validate(include=include, thresholds={}, options={}) == [
        "include must be a list of check names"
    ]


def test_empty_include_is_reported_with_the_known_checks():
    assert checks_validate(include=[], thresholds={}, options={}) == [
        "include must name at least one check (known: cpu, disk, load, memory, network, processes, swap)"
    ]


def test_a_check_listed_twice_is_reported():
    assert checks_validate(include=["cpu", "cpu"], thresholds={}, options={}) == [
        "check listed more than once in include: cpu"
    ]


@pytest.mark.parametrize(
    "thresholds, messages",
    [
        ([], ["thresholds must be an object mapping check names to {warning, critical}"]),
        ("high", ["thresholds must be an object mapping check names to {warning, critical}"]),
        ({"gpu": {"warning": 1}}, ["thresholds given for unknown check: gpu"]),
        ({"load": {"warning": 1}}, ["thresholds given for check not in include: load"]),
        ({"cpu": 80}, ["thresholds for cpu must be an object with warning and/or critical"]),
        ({"cpu": {"warn": 80}}, ["unknown threshold for cpu: warn (expected warning or critical)"]),
        ({"cpu": {"warning": "80"}}, ["threshold cpu.warning must be a number (got '80')"]),
        ({"cpu": {"critical": True}}, ["threshold cpu.critical must be a number (got True)"]),
        ({"cpu": {"warning": 90, "critical": 50}}, ["threshold cpu.warning (90) must not be above cpu.critical (50)"]),
        # The override is checked against the other limit's default (cpu critical is 95).
        ({"cpu": {"warning": 99.5}}, ["threshold cpu.warning (99.5) must not be above cpu.critical (95)"]),
        ({"memory": {"critical": 10}}, ["threshold memory.warning (85) must not be above memory.critical (10)"]),
        ({"cpu": {"warning": 90, "critical": 90}}, []),
    ],
)
def test_thresholds_are_validated(thresholds, messages):
    assert checks_validate(include=["cpu", "memory"], thresholds=thresholds, options={}) == messages


@pytest.mark.parametrize(
    "options, messages",
    [
        (None, ["options must be an object mapping check names to their options"]),
        ({"gpu": {}}, ["options given for unknown check: gpu"]),
        ({"disk": {"paths": ["/"]}}, ["options given for check not in include: disk"]),
        ({"cpu": [0.5]}, ["options for cpu must be an object"]),
        ({"cpu": {"interval": 0}}, ["option interval for check cpu must be a number of seconds above 0 and at most 60 (got 0)"]),
        ({"cpu": {"samples": 3}}, ["unknown option for check cpu: samples"]),
        ({"memory": {"paths": ["/"]}}, ["unknown option for check memory: paths"]),
    ],
)
def test_options_are_validated_by_each_checker(options, messages):
    assert checks_validate(include=["cpu", "memory"], thresholds={}, options=options) == messages


def test_every_problem_is_reported_at_once():
    assert checks_validate(
        include=["cpu", "nope"],
        thresholds={"cpu": {"warning": 99}, "nope": {"warning": 1}},
        options={"cpu": {"interval": 90}},
    ) == [
        "unknown check: nope",
        "threshold cpu.warning (99) must not be above cpu.critical (95)",
        "thresholds given for unknown check: nope",
        "option interval for check cpu must be a number of seconds above 0 and at most 60 (got 90)",
    ]
