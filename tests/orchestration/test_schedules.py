"""Definitions' schedules: validation, syncing to django-celery-beat, the tick's
launch (idempotency, overlap, broken definitions) and the concurrency limit."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from django.db.models import F
from django_celery_beat.models import PeriodicTask

from apps.broker.names import RUN_SCHEDULED_TASK
from apps.orchestration import lease, ticks
from apps.orchestration.models import PipelineDefinition, PipelineRun
from apps.orchestration.schedules import schedule_messages, schedule_sync, task_name
from apps.orchestration.validation import validate_definition
from tests.support import make_run

pytestmark = pytest.mark.django_db

NODES = [{"id": "m", "type": "context", "config": {"include": ["memory"]}}]


def definition(name="tick", **top) -> PipelineDefinition:
    return PipelineDefinition.objects.create(name=name, config={"version": "1.0", "nodes": NODES, **top})


@pytest.fixture(autouse=True)
def no_embedded_broker(settings):
    # Launches here are never sent (the test's transaction does not commit): no broker is started for them.
    settings.CELERY_BROKER_IS_EMBEDDED = False


@pytest.mark.parametrize(
    "schedule, message",
    [
        ("every 5", "'schedule' must be an object"),
        ({}, "schedule needs exactly one of 'every' (seconds) or 'cron' (5 fields)"),
        ({"every": 5, "cron": "* * * * *"}, "schedule needs exactly one of 'every' (seconds) or 'cron' (5 fields)"),
        ({"every": 0.5}, "schedule.every must be a number of seconds from 1 to 31622400"),
        ({"every": "300"}, "schedule.every must be a number of seconds from 1 to 31622400"),
        ({"every": True}, "schedule.every must be a number of seconds from 1 to 31622400"),
        ({"cron": "*/5 * * *"}, "schedule.cron is not a valid cron expression: it has 4 fields, not 5"),
        ({"cron": "61 * * * *"}, "schedule.cron is not a valid cron expression: Invalid end range: 61 > 59."),
        ({"cron": "0 0 31 2 *"}, "schedule.cron is not a valid cron expression"),
        ({"cron": 5}, "schedule.cron must be a string of 5 fields, like '*/5 * * * *'"),
        ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "schedule.timezone is not a known IANA time zone: Mars/Olympus"),
        ({"cron": "0 9 * * *", "timezone": "Z" * 300}, "schedule.timezone is not a known IANA time zone: " + "Z" * 62 + "…"),
        ({"cron": "0 9 * * *", "timezone": "Europe/" + "Z" * 300}, "schedule.timezone is not a known IANA time zone: Europe/Z"),
        ({"cron": "0 9 * * *", "timezone": "Europe"}, "schedule.timezone is not a known IANA time zone: Europe"),
        ({"cron": "0 9 * * *", "timezone": "../../../../etc/passwd"}, "schedule.timezone is not a known IANA time zone"),
        ({"cron": "0 9 * * *", "timezone": "tzdata.zi"}, "schedule.timezone is not a known IANA time zone: tzdata.zi"),
        ({"every": 60, "timezone": "Europe/Berlin"}, "schedule.timezone applies only to 'cron' schedules"),
        ({"every": 60, "overlap": "queue"}, "schedule.overlap must be 'skip' or 'allow'"),
        ({"every": 60, "payload": [1]}, "schedule.payload must be an object"),
        ({"every": 60, "at": "noon"}, "unknown field in schedule: at"),
    ],
)
def test_a_bad_schedule_is_reported_clearly(schedule, message):
    assert any(m.startswith(message) for m in schedule_messages(schedule)), schedule_messages(schedule)
    assert any(m.startswith(message) for m in validate_definition({"version": "1.0", "nodes": NODES, "schedule": schedule}))


def test_load_pipelines_refuses_a_bad_timezone_and_loads_the_other_files(run_command, tmp_path):
    for name, zone in (("long", "A" * 300), ("folder", "Europe"), ("berlin", "Europe/Berlin")):
        config = {"version": "1.0", "nodes": NODES, "schedule": {"cron": "0 9 * * *", "timezone": zone}}
        (tmp_path / f"{name}.json").write_text(json.dumps(config))
    (tmp_path / "plain.json").write_text(json.dumps({"version": "1.0", "nodes": NODES}))
    result = run_command("load_pipelines", "--dir", str(tmp_path))
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr
    assert (
        f"refused: {tmp_path / 'long.json'}\n  - schedule.timezone is not a known IANA time zone: {'A' * 62}…\n"
    ) in result.stderr
    assert f"refused: {tmp_path / 'folder.json'}\n  - schedule.timezone is not a known IANA time zone: Europe\n" in result.stderr
    assert result.stdout.endswith("2 loaded, 2 refused\n")
    assert set(PipelineDefinition.objects.values_list("name", flat=True)) == {"berlin", "plain"}
    assert PeriodicTask.objects.get(name=task_name("berlin")).crontab.timezone == ZoneInfo("Europe/Berlin")


def test_run_pipeline_refuses_a_long_timezone_with_the_validation_message(run_command, tmp_path):
    path = tmp_path / "long.json"
    path.write_text(json.dumps({"version": "1.0", "nodes": NODES, "schedule": {"cron": "0 9 * * *", "timezone": "A" * 300}}))
    for extra in (["--dry-run"], ["--inline"]):
        result = run_command("run_pipeline", "--config", str(path), *extra)
        assert result.exit_code == 2
        assert result.stderr == (
            "CommandError: Pipeline definition invalid:\n"
            f"  - schedule.timezone is not a known IANA time zone: {'A' * 62}…\n"
        )
    assert PipelineRun.objects.count() == 0


@pytest.mark.parametrize(
    "schedule",
    [
        {"every": 300},
        {"every": 1.5, "overlap": "allow", "payload": {"server": "web-01"}},
        {"cron": "*/5 * * * *"},
        {"cron": "0 9 * * mon-fri", "timezone": "Europe/Berlin", "overlap": "skip"},
    ],
)
def test_good_schedules_pass(schedule):
    assert validate_definition({"version": "1.0", "nodes": NODES, "schedule": schedule}) == []


@pytest.mark.parametrize("limit, ok", [(1, True), (20, True), (0, False), (-1, False), (1.5, False), (True, False), ("2", False)])
def test_max_concurrent_must_be_a_whole_number_of_one_or_more(limit, ok):
    messages = validate_definition({"version": "1.0", "nodes": NODES, "max_concurrent": limit})
    assert (messages == []) is ok, messages


def test_dry_run_shows_the_schedule_after_the_nodes_and_refuses_a_bad_cron(run_command, tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"version": "1.0", "nodes": NODES, "schedule": {"cron": "0 9 * * *", "timezone": "Europe/Berlin"}}))
    result = run_command("run_pipeline", "--config", str(path), "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "     → end\n\nSchedule: cron 0 9 * * * (Europe/Berlin)\n\nPayload:\n" in result.stdout
    path.write_text(json.dumps({"version": "1.0", "nodes": NODES, "schedule": {"cron": "0 25 * * *"}}))
    result = run_command("run_pipeline", "--config", str(path), "--dry-run")
    assert result.exit_code == 2
    assert "schedule.cron is not a valid cron expression" in result.stderr


def test_sync_creates_updates_and_disables_one_periodic_task(tmp_path):
    tick = definition(schedule={"every": 300})
    assert schedule_sync(definition=tick) == "schedule: every 300s"
    task = PeriodicTask.objects.get(name=task_name("tick"))
    assert (task.task, json.loads(task.kwargs), task.enabled) == (RUN_SCHEDULED_TASK, {"definition": "tick"}, True)
    assert task.interval.every == 300 and task.crontab is None
    assert schedule_sync(definition=tick) is None  # nothing changed

    tick.config = {**tick.config, "schedule": {"cron": "*/5 * * * *", "timezone": "Europe/Berlin"}}
    assert schedule_sync(definition=tick) == "schedule: cron */5 * * * * (Europe/Berlin)"
    task.refresh_from_db()
    assert task.interval is None and (task.crontab.minute, str(task.crontab.timezone)) == ("*/5", "Europe/Berlin")

    tick.config = {"version": "1.0", "nodes": NODES}
    assert schedule_sync(definition=tick) == "unscheduled"
    task.refresh_from_db()
    assert task.enabled is False
    assert schedule_sync(definition=tick) is None
    assert PeriodicTask.objects.filter(name__startswith="pipeline:").count() == 1


def test_load_pipelines_reports_schedule_changes_and_loading_twice_changes_nothing(run_command, tmp_path):
    (tmp_path / "every.json").write_text(json.dumps({"version": "1.0", "nodes": NODES, "schedule": {"every": 300}}))
    (tmp_path / "plain.json").write_text(json.dumps({"version": "1.0", "nodes": NODES}))
    first = run_command("load_pipelines", "--dir", str(tmp_path))
    assert first.stdout.splitlines() == [
        "created: every", "created: plain", "every: schedule: every 300s", "2 loaded, 0 refused",
    ]
    again = run_command("load_pipelines", "--dir", str(tmp_path))
    assert again.stdout.splitlines() == ["unchanged: every", "unchanged: plain", "2 loaded, 0 refused"]
    (tmp_path / "every.json").write_text(json.dumps({"version": "1.0", "nodes": NODES}))
    dropped = run_command("load_pipelines", "--dir", str(tmp_path))
    assert "every: unscheduled" in dropped.stdout.splitlines()
    (tmp_path / "bad.json").write_text(json.dumps({"version": "1.0", "nodes": NODES, "schedule": {"every": 0}}))
    refused = run_command("load_pipelines", "--dir", str(tmp_path))
    assert refused.exit_code == 2 and "schedule.every must be" in refused.stderr
    assert not PipelineDefinition.objects.filter(name="bad").exists()


def test_cron_next_due_follows_the_time_zone_across_daylight_saving_changes():
    berlin = ZoneInfo("Europe/Berlin")
    tick = definition(schedule={"cron": "0 9 * * *", "timezone": "Europe/Berlin"})
    schedule_sync(definition=tick)
    schedule = PeriodicTask.objects.get(name=task_name("tick")).schedule
    for last, expected in (
        # The night before summer time starts, and the night before it ends.
        (datetime(2026, 3, 28, 9, 0, tzinfo=berlin), datetime(2026, 3, 29, 7, 0, tzinfo=UTC)),
        (datetime(2026, 10, 24, 9, 0, tzinfo=berlin), datetime(2026, 10, 25, 8, 0, tzinfo=UTC)),
    ):
        start, delta, _ = schedule.remaining_delta(last, tz=berlin)
        assert (start + delta).astimezone(UTC) == expected


def test_a_tick_launches_a_scheduled_run_once_however_often_it_is_delivered():
    definition(schedule={"every": 60, "payload": {"server": "web-01"}})
    due = "2026-11-29T10:00:00.000+00:00"
    [run] = ticks.pipeline_run_schedule(definition_name="tick", due=due)
    [again] = ticks.pipeline_run_schedule(definition_name="tick", due=due)
    assert again.pk == run.pk
    assert PipelineRun.objects.count() == 1
    assert (run.trigger, run.status, run.payload, run.idempotency_key) == (
        "schedule", "queued", {"server": "web-01"}, f"schedule:tick:{due}",
    )


def test_overlap_skip_skips_a_tick_while_a_scheduled_run_is_active_and_allow_does_not():
    tick = definition(schedule={"every": 60})
    [first] = ticks.pipeline_run_schedule(definition_name="tick", due="t1")
    assert ticks.pipeline_run_schedule(definition_name="tick", due="t2") == []
    # A run launched by hand does not count: only the schedule's own runs overlap.
    PipelineRun.objects.filter(pk=first.pk).update(status="completed", finished_at=datetime.now(UTC))
    make_run(name="tick")
    assert len(ticks.pipeline_run_schedule(definition_name="tick", due="t3")) == 1
    tick.config = {**tick.config, "schedule": {"every": 60, "overlap": "allow"}}
    tick.save()
    assert len(ticks.pipeline_run_schedule(definition_name="tick", due="t4")) == 1
    assert PipelineRun.objects.filter(trigger="schedule", status="queued").count() == 2


def test_a_tick_for_a_deleted_definition_records_why_and_disables_the_schedule():
    tick = definition(schedule={"every": 60})
    schedule_sync(definition=tick)
    tick.delete()
    [run] = ticks.pipeline_run_schedule(definition_name="tick", due="t1")
    assert (run.status, run.trigger) == ("failed", "schedule")
    assert run.error == "Scheduled definition 'tick' cannot run: it no longer exists; its schedule is disabled"
    assert PeriodicTask.objects.get(name=task_name("tick")).enabled is False
    assert [r.pk for r in ticks.pipeline_run_schedule(definition_name="tick", due="t1")] == [run.pk]


def test_a_tick_for_an_invalid_or_inactive_definition_records_a_failed_run():
    tick = definition(schedule={"every": 60})
    PipelineDefinition.objects.filter(pk=tick.pk).update(config={**tick.config, "nodes": []})
    [invalid] = ticks.pipeline_run_schedule(definition_name="tick", due="t1")
    assert invalid.status == "failed"
    assert invalid.error == "Scheduled definition 'tick' cannot run: it is invalid: Pipeline has no nodes"
    PipelineDefinition.objects.filter(pk=tick.pk).update(is_active=False)
    [inactive] = ticks.pipeline_run_schedule(definition_name="tick", due="t2")
    assert inactive.error == "Scheduled definition 'tick' cannot run: it is inactive"


def test_idempotency_key_on_the_command_line_shows_the_existing_run(run_command, tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"version": "1.0", "nodes": NODES}))
    first = run_command("run_pipeline", "--config", str(path), "--idempotency-key", "deploy-42", "--json")
    assert first.exit_code == 0, first.stderr
    second = run_command("run_pipeline", "--config", str(path), "--idempotency-key", "deploy-42", "--json")
    assert second.exit_code == 0
    assert json.loads(second.stdout)["run_id"] == json.loads(first.stdout)["run_id"]
    assert "already exists for idempotency key deploy-42" in second.stderr
    assert PipelineRun.objects.count() == 1
    PipelineRun.objects.update(status="failed", error="boom", finished_at=datetime.now(UTC))
    finished = run_command("run_pipeline", "--config", str(path), "--idempotency-key", "deploy-42", "--wait")
    assert finished.exit_code == 1 and "Pipeline failed: boom" in finished.stderr
    bad = run_command("run_pipeline", "--config", str(path), "--idempotency-key", "two words")
    assert bad.exit_code == 2 and PipelineRun.objects.count() == 1


def limited_runs(count: int, limit: int) -> list[PipelineRun]:
    definition(name="limited", max_concurrent=limit)
    return [make_run(name="limited") for _ in range(count)]


def test_a_run_beyond_max_concurrent_stays_queued_until_a_slot_frees():
    first, second, third = limited_runs(3, limit=2)
    assert lease.run_claim(run_id=first.pk, token="a").reason == "claimed"
    assert lease.run_claim(run_id=second.pk, token="b").reason == "claimed"
    waiting = lease.run_claim(run_id=third.pk, token="c")
    assert (waiting.reason, waiting.lease) == ("at_limit", None)
    third.refresh_from_db()
    assert third.status == "queued"
    PipelineRun.objects.filter(pk=first.pk).update(status="completed", finished_at=datetime.now(UTC))
    assert lease.run_claim(run_id=third.pk, token="c").reason == "claimed"


def test_the_limit_counts_runs_of_the_same_definition_only():
    (limited,) = limited_runs(1, limit=1)
    other = PipelineDefinition.objects.create(name="other", config={"version": "1.0", "nodes": NODES, "max_concurrent": 1})
    other_run = make_run(name=other.name)
    assert lease.run_claim(run_id=limited.pk, token="a").reason == "claimed"
    assert lease.run_claim(run_id=other_run.pk, token="b").reason == "claimed"


# -- beat's own firing: clocks, the herd's multi-row insert, the lease ------------------------------

from datetime import timedelta  # noqa: E402

from django.db import connection  # noqa: E402
from django.db.models.functions import Now  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from apps.orchestration import beatstate  # noqa: E402
from apps.orchestration.models import ScheduleState  # noqa: E402


def scheduled_definitions(count: int, **schedule) -> list[PipelineDefinition]:
    made = [definition(name=f"herd-{i:03d}", schedule={"every": 60, **schedule}) for i in range(count)]
    for one in made:
        schedule_sync(definition=one)
    return made


def all_due_now() -> None:
    beatstate.schedule_states_sync(now=datetime.now(UTC))
    ScheduleState.objects.update(next_due_at=Now() - timedelta(seconds=1))


def broker_running() -> None:
    """The embedded broker running when it is the one in use (this module turns off its start on a
    launch, and a process starts it only once, which an earlier test may have stopped since)."""
    from django.conf import settings

    from apps.broker.embedded import embedded_broker
    from apps.broker.redis_adapter import SOCKET_SCHEME

    if settings.CELERY_BROKER_URL.startswith(SOCKET_SCHEME):
        embedded_broker().ensure_running()


@pytest.fixture
def holder() -> str:
    name = beatstate.holder_name()
    assert beatstate.lease_take(holder=name)
    return name


def test_a_herd_of_due_schedules_is_written_with_one_insert_and_fires_once(holder, django_capture_on_commit_callbacks):
    scheduled_definitions(30, overlap="allow")
    all_due_now()
    broker_running()
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True) as sends:
        fired = ticks.schedules_fire(holder=holder)
    # The runs' messages, sent in one batch once the transaction has committed, and taken by the broker
    # (a refused batch marks every run of it unsent).
    assert len(sends) == 1 and not PipelineRun.objects.filter(published_at__isnull=True).exists()
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('INSERT INTO "orchestration_pipelinerun"')]
    assert (fired.ticks, len(fired.runs), len(inserts)) == (30, 30, 1)
    # Bounded: the same few statements for 30 schedules as for one.
    assert len(queries.captured_queries) <= 12, [q["sql"][:80] for q in queries.captured_queries]
    runs = PipelineRun.objects.filter(trigger="schedule")
    assert runs.count() == 30 and set(runs.values_list("status", flat=True)) == {"queued"}
    assert all(run.idempotency_key.startswith(f"schedule:{run.definition_name}:") for run in runs)
    # Each clock moved on by its interval: nothing more is due.
    assert ticks.schedules_fire(holder=holder).ticks == 0
    assert ticks.schedules_next_due_in() > 50
    assert PeriodicTask.objects.filter(name__startswith="pipeline:herd-", total_run_count=1).count() == 30


def test_a_clock_put_back_to_the_same_due_time_launches_nothing_twice(holder):
    scheduled_definitions(3, overlap="allow")
    all_due_now()
    first = ticks.schedules_fire(holder=holder)
    ScheduleState.objects.update(next_due_at=F("last_due_at"))
    again = ticks.schedules_fire(holder=holder)
    assert (first.ticks, len(first.runs), again.ticks, len(again.runs)) == (3, 3, 3, 0)
    assert PipelineRun.objects.count() == 3


def test_beat_firing_keeps_overlap_skip_and_allow(holder):
    skip, allow = definition(name="skip", schedule={"every": 60}), definition(name="allow", schedule={"every": 60, "overlap": "allow"})
    for one in (skip, allow):
        schedule_sync(definition=one)
    all_due_now()
    ticks.schedules_fire(holder=holder)
    ScheduleState.objects.update(next_due_at=Now() - timedelta(seconds=1))
    ticks.schedules_fire(holder=holder)
    assert PipelineRun.objects.filter(definition_name="skip").count() == 1
    assert PipelineRun.objects.filter(definition_name="allow").count() == 2


def test_beat_firing_fans_out_over_hosts_and_records_broken_definitions(holder):
    hosts = definition(name="hosts", schedule={"every": 60}, hosts=["web-1", "web-2"])
    inactive = definition(name="inactive", schedule={"every": 60})
    gone = definition(name="gone", schedule={"every": 60})
    for one in (hosts, inactive, gone):
        schedule_sync(definition=one)
    all_due_now()
    PipelineDefinition.objects.filter(pk=inactive.pk).update(is_active=False)
    gone.delete()
    ticks.schedules_fire(holder=holder)
    fanned = list(PipelineRun.objects.filter(definition_name="hosts").order_by("target_host"))
    assert [run.target_host for run in fanned] == ["web-1", "web-2"]
    assert fanned[0].group_id == fanned[1].group_id is not None
    assert fanned[0].idempotency_key.endswith("@web-1")
    failed = {run.definition_name: run.error for run in PipelineRun.objects.filter(status="failed")}
    assert failed == {
        "inactive": "Scheduled definition 'inactive' cannot run: it is inactive",
        "gone": "Scheduled definition 'gone' cannot run: it no longer exists; its schedule is disabled",
    }
    assert PeriodicTask.objects.get(name=task_name("gone")).enabled is False
    assert not ScheduleState.objects.filter(definition_name="gone").exists()


def test_a_second_beat_is_refused_the_lease_and_fires_nothing(holder):
    scheduled_definitions(2, overlap="allow")
    all_due_now()
    other = beatstate.holder_name()
    assert beatstate.lease_take(holder=other) is False
    assert ticks.schedules_fire(holder=other).lease_lost
    assert PipelineRun.objects.count() == 0
    status = beatstate.lease_status()
    assert (status.holder, status.refused_by, status.expired) == (holder, other, False)
    # Once the holder lets go (or stops renewing), the other takes over.
    beatstate.lease_release(holder=holder)
    assert beatstate.lease_take(holder=other)
    assert len(ticks.schedules_fire(holder=other).runs) == 2


def test_clocks_follow_their_periodic_tasks(holder):
    tick = definition(schedule={"every": 300})
    schedule_sync(definition=tick)
    now = datetime.now(UTC)
    assert beatstate.schedule_states_sync(now=now) == 1
    state = ScheduleState.objects.get()
    assert (state.definition_name, state.schedule) == ("tick", "every 300 seconds")
    assert abs((state.next_due_at - now).total_seconds() - 300) < 1
    assert beatstate.schedule_states_sync(now=now) == 0  # nothing changed: nothing written
    tick.config = {**tick.config, "schedule": {"cron": "0 9 * * *", "timezone": "Europe/Berlin"}}
    schedule_sync(definition=tick)
    assert beatstate.schedule_states_sync(now=now) == 1
    state.refresh_from_db()
    assert state.next_due_at.astimezone(ZoneInfo("Europe/Berlin")).hour == 9
    tick.config = {"version": "1.0", "nodes": NODES}
    schedule_sync(definition=tick)
    assert beatstate.schedule_states_sync(now=now) == 1
    assert not ScheduleState.objects.exists()


def test_an_overdue_tick_fires_once_stamped_when_fired():
    tick = definition(schedule={"cron": "* * * * *"})
    schedule_sync(definition=tick)
    task = PeriodicTask.objects.get(name=task_name("tick"))
    now = datetime(2026, 5, 1, 12, 0, 30, tzinfo=UTC)
    due, following = beatstate.tick_due(task, next_due=datetime(2026, 5, 1, 12, 0, tzinfo=UTC), now=now)
    assert (due, following) == (datetime(2026, 5, 1, 12, 0, tzinfo=UTC), datetime(2026, 5, 1, 12, 1, tzinfo=UTC))
    late = datetime(2026, 5, 1, 15, 0, 30, tzinfo=UTC)  # beat was down three hours
    due, following = beatstate.tick_due(task, next_due=datetime(2026, 5, 1, 12, 0, tzinfo=UTC), now=late)
    assert (due, following) == (late, datetime(2026, 5, 1, 15, 1, tzinfo=UTC))
