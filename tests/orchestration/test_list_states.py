"""list_states: the monitoring state board, worst first, as a table or JSON."""
import json
from datetime import UTC, datetime, timedelta

import pytest

from apps.orchestration.monitoring import state_end_record

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


@pytest.fixture
def board():
    for run_id, (definition, host, severity, minutes) in enumerate([
        ("health-check", "web-01", "ok", 0),
        ("health-check", "web-02", "critical", 5),
        ("host-watch", "db-01", "warning", 1),
        ("host-watch", "db-02", "critical", 2),
    ], start=1):
        state_end_record(definition=definition, host=host, severity=severity, run_id=run_id,
                         now=T0 + timedelta(minutes=minutes), notified=severity != "ok")


def test_the_board_lists_the_worst_first_then_the_longest_lasting(run_command, board):
    result = run_command("list_states")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SEVERITY", "DEFINITION", "HOST", "SINCE", "(UTC)", "LAST", "RUN", "(UTC)",
                                "LAST", "NOTIFIED", "(UTC)"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["CRITICAL", "host-watch", "db-02"], ["CRITICAL", "health-check", "web-02"],
        ["WARNING", "host-watch", "db-01"], ["OK", "health-check", "web-01"],
    ]
    assert "2026-12-07 10:02:00 (" in lines[1] and lines[4].endswith("  -")


def test_json_and_filters(run_command, board):
    rows = json.loads(run_command("list_states", "--json", "--definition", "host-watch").stdout)
    assert [(r["host"], r["severity"]) for r in rows] == [("db-02", "critical"), ("db-01", "warning")]
    assert rows[0] == {
        "definition": "host-watch", "host": "db-02", "severity": "critical", "since": "2026-12-07T10:02:00+00:00",
        "last_run_id": 4, "last_run_at": "2026-12-07T10:02:00+00:00", "last_notified_at": "2026-12-07T10:02:00+00:00",
    }
    rows = json.loads(run_command("list_states", "--json", "--severity", "ok").stdout)
    assert [r["host"] for r in rows] == ["web-01"]
    assert json.loads(run_command("list_states", "--json", "--limit", "1").stdout)[0]["host"] == "db-02"


def test_an_empty_board_and_bad_input(run_command):
    assert run_command("list_states").stdout.strip() == (
        "No monitoring state yet: it is written as runs that find a severity end."
    )
    bad = run_command("list_states", "--limit", "0")
    assert bad.exit_code == 2 and "--limit must be from 1 to 10000" in bad.stderr
    wrong = run_command("list_states", "--severity", "bad")
    assert wrong.exit_code == 2
