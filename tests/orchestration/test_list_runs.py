"""list_runs: the run history through the command as manage.py runs it."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.orchestration.models import PipelineDefinition, PipelineRun
from apps.orchestration.selectors import RUN_LIST_MAX, pipeline_runs_list
from apps.orchestration.validation import DEFINITION_NAME
from apps.text import display_width
from tests.orchestration.test_hostile_input import HOSTILE_TEXT, TINY, Verdicts, cli
from tests.support import make_run

pytestmark = pytest.mark.django_db(transaction=True)

LISTED_FIELDS = {
    "run_id", "trace_id", "definition", "config", "origin", "origin_kind", "trigger", "retry_of", "idempotency_key",
    "status", "created_at", "started_at", "finished_at", "duration_ms", "error",
}


def past_run(*, age: timedelta = timedelta(0), status="completed", trigger="cli", name="tiny", kind="definition",
             origin=None, error="", duration_ms=12.5) -> PipelineRun:
    """A run as the launcher stores it (tests.support.make_run), ended with ``status`` and created ``age`` ago,
    from the definition ``name``, a config file or the built-in pipeline (``kind``, ``origin``)."""
    at = timezone.now() - age
    finished = status in PipelineRun.TERMINAL
    elsewhere = {} if kind == "definition" else {"definition": None}
    return make_run(
        TINY["nodes"], name=name, **elsewhere,
        definition_name=name if kind != "config" else "", origin=origin or name, origin_kind=kind,
        trigger=trigger, status=status, error=error,
        started_at=at if status != "queued" else None,
        finished_at=at if finished else None,
        duration_ms=duration_ms if finished else None,
        created_at=at,  # stamped on insert: moved back to give the run its age
    )


def listed(*argv: str) -> list[dict]:
    result = cli("list_runs", "--json", *argv)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_runs_are_listed_newest_first_up_to_the_limit():
    runs = [past_run(age=timedelta(minutes=minutes)) for minutes in (50, 10, 40, 20, 30)]
    by_age = [run.pk for run in sorted(runs, key=lambda run: run.created_at, reverse=True)]
    assert [row["run_id"] for row in listed()] == by_age
    assert [row["run_id"] for row in listed("--limit", "3")] == by_age[:3]
    assert [row["run_id"] for row in listed("--limit", "1")] == by_age[:1]


def test_runs_created_at_the_same_moment_are_listed_by_id_descending():
    runs = [past_run() for _ in range(3)]
    PipelineRun.objects.update(created_at=runs[0].created_at)
    assert [row["run_id"] for row in listed()] == [run.pk for run in reversed(runs)]


def test_the_default_limit_is_20():
    for _ in range(25):
        past_run()
    assert len(listed()) == 20
    assert len(listed("--limit", "25")) == 25


def test_filters_by_definition_status_trigger_and_together():
    a_cli = past_run(name="alpha")
    a_failed = past_run(name="alpha", status="failed", error="boom", trigger="schedule")
    a_sched = past_run(name="alpha", trigger="schedule")
    b_sched = past_run(name="beta", trigger="schedule")
    past_run(kind="config", origin="/tmp/alpha.json")

    def ids(*argv):
        return {row["run_id"] for row in listed(*argv)}

    assert ids("--definition", "alpha") == {a_cli.pk, a_failed.pk, a_sched.pk}
    assert ids("--status", "failed") == {a_failed.pk}
    assert ids("--trigger", "schedule") == {a_failed.pk, a_sched.pk, b_sched.pk}
    assert ids("--definition", "alpha", "--trigger", "schedule", "--status", "completed") == {a_sched.pk}
    assert ids("--definition", "nobody") == set()


def test_since_keeps_runs_created_within_the_duration():
    past_run(age=timedelta(days=8))
    week = past_run(age=timedelta(days=6))
    hours = past_run(age=timedelta(hours=3))
    hour = past_run(age=timedelta(minutes=50))
    minutes = past_run(age=timedelta(minutes=10))
    recent = past_run(age=timedelta(seconds=5))

    def ids(since):
        return {row["run_id"] for row in listed("--since", since)}

    assert ids("30s") == {recent.pk}
    assert ids("15m") == {recent.pk, minutes.pk}
    assert ids("2h") == {recent.pk, minutes.pk, hour.pk}
    assert ids("1d") == {recent.pk, minutes.pk, hour.pk, hours.pk}
    assert ids("7d") == {recent.pk, minutes.pk, hour.pk, hours.pk, week.pk}


def test_json_has_every_field_of_the_run(tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    assert cli("run_pipeline", "--inline", "--config", str(config)).exit_code == 0
    PipelineDefinition.objects.create(name="tiny", config=TINY)
    assert cli("run_pipeline", "--inline", "--definition", "tiny", "--idempotency-key", "k-1").exit_code == 0
    by_definition, by_config = listed()
    assert set(by_definition) >= LISTED_FIELDS and set(by_config) >= LISTED_FIELDS
    run = PipelineRun.objects.get(definition_name="tiny")
    assert by_definition == {
        "run_id": run.pk,
        "trace_id": run.trace_id,
        "definition": "tiny",
        "config": None,
        "origin": "tiny",
        "origin_kind": "definition",
        "target_host": None,
        "group_id": None,
        "trigger": "cli",
        "retry_of": None,
        "idempotency_key": "k-1",
        "status": "completed",
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat(),
        "duration_ms": run.duration_ms,
        "error": None,
    }
    assert by_config["definition"] is None and by_config["config"] == by_config["origin"] == str(config)
    assert by_config["origin_kind"] == "config" and by_config["trigger"] == "cli"


def test_host_lists_only_the_runs_targeting_that_host():
    web = past_run(name="health-check")
    past_run(name="health-check")
    PipelineRun.objects.filter(pk=web.pk).update(target_host="web-01")
    assert [row["run_id"] for row in listed("--host", "WEB-01")] == [web.pk]
    assert listed("--host", "db-01") == []
    refused = cli("list_runs", "--host", "no such host")
    assert refused.exit_code == 2 and refused.stdout == ""
    assert refused.stderr.startswith("CommandError: --host must be a host name")


def test_the_query_reads_only_listed_columns_and_is_bounded():
    for _ in range(3):
        past_run()
    with CaptureQueriesContext(connection) as queries:
        rows = pipeline_runs_list(limit=2)
    assert len(rows) == 2 and len(queries) == 1
    sql = queries[0]["sql"].lower()
    assert "limit 2" in sql
    for blob in ("config_snapshot", "payload", "result"):
        assert f'"{blob}"' not in sql, blob
    with pytest.raises(ValueError):
        pipeline_runs_list(limit=RUN_LIST_MAX + 1)


def test_the_table_is_aligned_in_columns():
    past_run(name="health-check", duration_ms=231.4)
    past_run(name="x", status="failed", error="Node 'metrics' failed: disk full", duration_ms=65_000)
    past_run(kind="config", origin="/srv/pipelines/ｗｉｄｅ-名前.json", trigger="schedule", duration_ms=12_345)
    builtin = past_run(kind="builtin", origin="builtin", name="builtin", status="running")
    PipelineRun.objects.filter(pk=builtin.pk).update(target_host="web-01")
    result = cli("list_runs")
    assert result.exit_code == 0, result.stderr
    header, *lines = result.stdout.rstrip("\n").split("\n")
    assert header.split() == [
        "ID", "DEFINITION", "HOST", "TRIGGER", "STATUS", "CREATED", "(UTC)", "DURATION", "ERROR"
    ]
    columns = ("DEFINITION", "HOST", "TRIGGER", "STATUS", "CREATED", "DURATION", "ERROR")
    starts = [header.index(name) for name in columns]
    expected = [  # newest first; None: not compared
        ["built-in", "web-01", "cli", "running", None, "-", None],
        ["/srv/pipelines/ｗｉｄｅ-名前.json", "-", "schedule", "completed", None, "12.3s", None],
        ["x", "-", "cli", "failed", None, "1m05s", "Node 'metrics' failed: disk full"],
        ["health-check", "-", "cli", "completed", None, "231ms", None],
    ]
    assert len(lines) == len(expected)
    for line, cells in zip(lines, expected, strict=True):
        for start, cell in zip(starts, cells, strict=True):
            # Columns line up on screen, where a wide character takes two columns.
            at = next((i for i in range(len(line) + 1) if display_width(line[:i]) >= start), len(line))
            if cell is None:
                continue
            assert display_width(line[:at]) == start, (line, cell)
            assert line[at:].startswith(cell) and line[at - 2:at] == "  ", (line, cell)
    # The id column is aligned right, under the end of its header.
    ids = [str(pk) for pk in PipelineRun.objects.order_by("-created_at", "-pk").values_list("pk", flat=True)]
    for line, run_id in zip(lines, ids, strict=True):
        assert line.lstrip().startswith(run_id + " ") and line.index(run_id) + len(run_id) == header.index("ID") + 2


def test_hostile_error_and_origin_are_one_escaped_line_each():
    error = "\x1b[2J\x1b[31mred\nforged: line\r\u202e" + "e" * 200
    past_run(status="failed", error=error)
    past_run(kind="config", origin="/tmp/\x1b]0;title\x07.json", error="x\ny")
    result = cli("list_runs")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.rstrip("\n").split("\n")
    assert len(lines) == 3
    assert all(char.isprintable() for line in lines for char in line)
    assert "/tmp/\\x1b]0;title\\x07.json" in lines[1] and lines[1].endswith("x\\ny")
    assert "\\x1b[2J\\x1b[31mred\\nforged: line\\r\\u202e" in lines[2]
    assert lines[2].endswith("…") and "e" * 60 not in lines[2]
    as_json = listed()
    assert as_json[1]["error"] == error and as_json[0]["origin"] == "/tmp/\x1b]0;title\x07.json"
    assert "\x1b" not in cli("list_runs", "--json").stdout


def test_no_runs_says_so():
    assert cli("list_runs").stdout == "No runs.\n"
    assert listed() == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--status", "finished"],
        ["--trigger", "cron"],
        ["--since", "5x"],
        ["--since", "0s"],
        ["--since", "-2h"],
        ["--since", "2"],
        ["--since", "1.5h"],
        ["--since", ""],
        ["--since", "99999999999d"],
        ["--limit", "0"],
        ["--limit", "-3"],
        ["--limit", str(RUN_LIST_MAX + 1)],
        ["--limit", "ten"],
        ["--definition", "bad name"],
        ["--definition", ""],
        ["--json", "extra"],
    ],
)
def test_bad_input_is_one_line_and_exit_2_with_nothing_on_stdout(argv):
    past_run()
    result = cli("list_runs", *argv)
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_hostile_text_in_every_list_runs_option():
    past_run()
    verdicts = Verdicts()
    for text in HOSTILE_TEXT:
        verdicts.run("list_runs", "--definition", text, refused=not DEFINITION_NAME.fullmatch(text))
        verdicts.run("list_runs", "--status", text, refused=True)
        verdicts.run("list_runs", "--trigger", text, refused=True)
        verdicts.run("list_runs", "--since", text, refused=True)
        verdicts.run("list_runs", "--limit", text, refused=True)
        verdicts.run("list_runs", "--json", "--since", text, refused=True)
    verdicts.assert_clean()


def test_trigger_alert_lists_the_runs_alerts_started(run_command, settings):
    from apps.orchestration.intake import alerts_receive

    settings.CELERY_BROKER_IS_EMBEDDED = False  # nothing to start: the run stays queued, as with a broker down
    past_run(name="by-hand")
    PipelineDefinition.objects.create(name="paged", config={
        **TINY, "triggers": [{"alert": {"source": "generic"}}],
    })
    [run] = alerts_receive(source="generic", body={"name": "Disk full", "host": "db-01"}).runs
    result = run_command("list_runs", "--trigger", "alert", "--json")
    assert result.exit_code == 0, result.stderr
    assert [(row["run_id"], row["trigger"], row["definition"]) for row in json.loads(result.stdout)] == [
        (run.pk, "alert", "paged")
    ]
