"""The `processes` check (apps/checkers/checks/processes.py), on this machine's processes."""
from __future__ import annotations

import json
import subprocess
import sys

import psutil
import pytest

from apps.checkers.checks.processes import ProcessesChecker

FAST = {"interval": 0.1}
ROW_KEYS = {"name", "pid", "cpu_percent", "memory_percent"}


@pytest.mark.parametrize(
    "thresholds, status",
    [({"warning": 0, "critical": 0}, "critical"), ({"warning": 0, "critical": 1000}, "warning"),
     ({"warning": 1000, "critical": 1000}, "ok")],
)
def test_status_follows_the_thresholds_on_the_real_processes(thresholds, status):
    result = ProcessesChecker().run(thresholds=thresholds, options=FAST)
    assert result.status == status
    assert result.unit == "%"
    assert result.message.startswith(f"Largest process memory {result.value:.1f}% (")
    json.dumps(result.to_dict())


def test_value_is_the_largest_process_memory_and_lists_are_sorted():
    result = ProcessesChecker().run(thresholds={}, options=FAST)
    top_cpu, top_memory = result.details["top_cpu"], result.details["top_memory"]
    assert len(top_cpu) == len(top_memory) == 5  # the default top
    assert result.value == top_memory[0]["memory_percent"]
    assert [r["memory_percent"] for r in top_memory] == sorted((r["memory_percent"] for r in top_memory), reverse=True)
    assert [r["cpu_percent"] for r in top_cpu] == sorted((r["cpu_percent"] for r in top_cpu), reverse=True)
    for row in top_cpu + top_memory:
        assert set(row) == ROW_KEYS
        assert isinstance(row["pid"], int) and row["pid"] > 0 and row["name"]
    assert result.details["process_count"] >= 5
    assert result.details["interval_seconds"] == 0.1
    largest = top_memory[0]
    assert f"{largest['name']} (pid {largest['pid']})" in result.message


def test_top_limits_both_lists():
    result = ProcessesChecker().run(thresholds={}, options={"top": 2, "interval": 0.05})
    assert len(result.details["top_cpu"]) == len(result.details["top_memory"]) == 2


def test_a_busy_process_is_among_the_top_cpu_users():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        # The top 50, not 5: on a loaded machine (the suite's own processes) a spinning process
        # gets less than a core and others may be busier; it is still measured as busy.
        result = ProcessesChecker().run(thresholds={}, options={"interval": 1.0, "top": 50})
    finally:
        busy.kill()
        busy.wait()
    rows = {row["pid"]: row for row in result.details["top_cpu"]}
    assert busy.pid in rows, result.details["top_cpu"]
    assert rows[busy.pid]["cpu_percent"] > 5, rows[busy.pid]


def test_our_own_process_is_measured_like_psutil_does():
    result = ProcessesChecker().run(thresholds={}, options={"top": 50, "interval": 0.05})
    memory = psutil.Process().memory_percent()
    mine = [r for r in result.details["top_memory"] if r["pid"] == psutil.Process().pid]
    # Our process may be too small to be among the top 50, but never larger than the largest.
    assert result.value >= round(memory, 1) - 0.1
    if mine:
        assert abs(mine[0]["memory_percent"] - memory) < 1


def test_processes_defaults_are_50_and_80():
    assert ProcessesChecker.default_thresholds == {"warning": 50.0, "critical": 80.0}


@pytest.mark.parametrize(
    "options, messages",
    [
        ({"top": 0}, ["option top for check processes must be a whole number from 1 to 50 (got 0)"]),
        ({"top": 51}, ["option top for check processes must be a whole number from 1 to 50 (got 51)"]),
        ({"top": 2.5}, ["option top for check processes must be a whole number from 1 to 50 (got 2.5)"]),
        ({"top": "5"}, ["option top for check processes must be a whole number from 1 to 50 (got '5')"]),
        ({"top": True}, ["option top for check processes must be a whole number from 1 to 50 (got True)"]),
        ({"interval": 0}, ["option interval for check processes must be a number of seconds above 0 and at most 10 (got 0)"]),
        ({"interval": 11}, ["option interval for check processes must be a number of seconds above 0 and at most 10 (got 11)"]),
        ({"count": 3}, ["unknown option for check processes: count"]),
        ({"top": 50, "interval": 10}, []),
    ],
)
def test_processes_options_are_validated(options, messages):
    assert ProcessesChecker().validate_options(options) == messages


def test_processes_run_refuses_invalid_options():
    with pytest.raises(ValueError, match="option top for check processes"):
        ProcessesChecker().run(thresholds={}, options={"top": 0})
