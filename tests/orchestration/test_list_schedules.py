"""list_schedules: pipeline schedules as beat holds them, with their last run and next due time."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from apps.broker.names import RUN_SCHEDULED_TASK
from apps.orchestration.models import PipelineDefinition
from apps.orchestration.schedules import schedule_sync, task_name
from apps.orchestration.selectors import pipeline_schedules_list
from tests.orchestration.test_hostile_input import HOSTILE_TEXT, TINY, Verdicts, cli
from tests.orchestration.test_list_runs import past_run

pytestmark = pytest.mark.django_db(transaction=True)

UTC = UTC


def scheduled(name: str, schedule: dict | None) -> PipelineDefinition:
    """A stored definition with ``schedule``, synced into beat's table as load_pipelines does."""
    config = {**TINY, "schedule": schedule} if schedule else dict(TINY)
    definition, _ = PipelineDefinition.objects.update_or_create(name=name, defaults={"config": config})
    schedule_sync(definition=definition)
    return definition


def beat_sent(name: str, at: datetime) -> None:
    """Record that beat sent the schedule's task at ``at`` (what its scheduler writes)."""
    assert PeriodicTask.objects.filter(name=task_name(name)).update(last_run_at=at) == 1


def listing(name: str, now: datetime):
    return next(item for item in pipeline_schedules_list(now=now) if item.definition == name)


def listed_json() -> list[dict]:
    result = cli("list_schedules", "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_interval_and_cron_schedules_are_listed_with_words_zone_overlap_and_state():
    scheduled("every-five", {"every": 300})
    scheduled("berlin-nine", {"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin", "overlap": "allow"})
    scheduled("dropped", {"every": 60})
    scheduled("dropped", None)
    by_name = {item["definition"]: item for item in listed_json()}
    assert list(by_name) == ["berlin-nine", "dropped", "every-five"]
    five = by_name["every-five"]
    assert five["task"] == "pipeline:every-five" and five["kind"] == "interval"
    assert five["schedule"] == "every 300s" and five["every_seconds"] == 300
    assert five["timezone"] is None and five["cron"] is None
    assert five["overlap"] == "skip" and five["enabled"] is True
    assert five["last_run"] is None and five["next_due_at"] is not None
    berlin = by_name["berlin-nine"]
    assert berlin["kind"] == "cron" and berlin["cron"] == "0 9 * * 1-5"
    assert berlin["schedule"] == "At 09:00 AM, only on Monday, Tuesday, Wednesday, Thursday, and Friday"
    assert berlin["timezone"] == "Europe/Berlin" and berlin["overlap"] == "allow"
    dropped = by_name["dropped"]
    assert dropped["enabled"] is False and dropped["next_due_at"] is None


def test_only_pipeline_schedules_are_listed():
    scheduled("mine", {"every": 10})
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=60, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="recover-runs", task="orchestration.recover_runs", interval=every_minute)
    PeriodicTask.objects.create(name="not-prefixed", task=RUN_SCHEDULED_TASK, interval=every_minute)
    PeriodicTask.objects.create(name="pipeline:other-task", task="celery.backend_cleanup", interval=every_minute)
    assert [item["definition"] for item in listed_json()] == ["mine"]


def test_next_due_of_an_interval_is_its_last_send_plus_the_interval():
    scheduled("every-five", {"every": 300})
    sent = datetime(2026, 3, 28, 12, 0, 0, tzinfo=UTC)
    beat_sent("every-five", sent)
    assert listing("every-five", sent + timedelta(seconds=100)).next_due_at == sent + timedelta(seconds=300)
    # Overdue (beat stopped): the due time stays the one that was missed.
    assert listing("every-five", sent + timedelta(hours=1)).next_due_at == sent + timedelta(seconds=300)


def test_a_schedule_never_sent_is_due_one_interval_after_it_was_last_changed():
    scheduled("fresh", {"every": 2.5})
    task = PeriodicTask.objects.get(name="pipeline:fresh")
    assert listing("fresh", task.date_changed).next_due_at == task.date_changed + timedelta(seconds=2.5)


@pytest.mark.parametrize(
    "sent, now, due",
    [
        # Spring forward in Berlin (29 March 2026): 09:00 is 08:00 UTC the day before, 07:00 UTC after.
        ("2026-03-28T08:00:00", "2026-03-28T20:00:00", "2026-03-29T07:00:00"),
        # Fall back (25 October 2026): 09:00 is 07:00 UTC the day before, 08:00 UTC after.
        ("2026-10-24T07:00:00", "2026-10-24T20:00:00", "2026-10-25T08:00:00"),
        # Same day, before nine.
        ("2026-06-01T07:00:00", "2026-06-02T05:00:00", "2026-06-02T07:00:00"),
    ],
)
def test_next_due_of_a_cron_schedule_follows_its_time_zone_across_dst(sent, now, due):
    scheduled("berlin-nine", {"cron": "0 9 * * *", "timezone": "Europe/Berlin"})
    beat_sent("berlin-nine", datetime.fromisoformat(sent).replace(tzinfo=UTC))
    item = listing("berlin-nine", datetime.fromisoformat(now).replace(tzinfo=UTC))
    assert item.next_due_at == datetime.fromisoformat(due).replace(tzinfo=UTC)


def test_next_due_matches_celerys_own_computation_now():
    scheduled("every-minute", {"cron": "* * * * *"})
    task = PeriodicTask.objects.get(name="pipeline:every-minute")
    due = datetime.fromisoformat(listed_json()[0]["next_due_at"])
    assert due == task.date_changed.replace(second=0, microsecond=0) + timedelta(minutes=1)
    # Celery's schedule, asked on its own clock a moment later, agrees.
    celery_due = timezone.now() + task.schedule.remaining_estimate(task.date_changed)
    assert abs(celery_due - due) < timedelta(seconds=1)


def test_last_run_is_the_newest_scheduled_run_of_the_definition():
    scheduled("every-five", {"every": 300})
    scheduled("other", {"every": 300})
    past_run(name="every-five", trigger="schedule", age=timedelta(hours=2))
    newest = past_run(name="every-five", trigger="schedule", status="failed", error="x", age=timedelta(hours=1))
    past_run(name="every-five", trigger="cli")
    past_run(name="other", trigger="schedule", age=timedelta(minutes=1))
    item = listing("every-five", newest.created_at)
    assert item.last_run == {"run_id": newest.pk, "status": "failed", "created_at": newest.created_at}
    as_json = {entry["definition"]: entry for entry in listed_json()}
    assert as_json["every-five"]["last_run"] == {
        "run_id": newest.pk, "status": "failed", "created_at": newest.created_at.isoformat(),
    }


def test_a_schedule_whose_definition_is_gone_has_no_overlap_policy():
    scheduled("gone", {"every": 300, "overlap": "allow"}).delete()
    assert listed_json()[0]["overlap"] is None


def test_listing_takes_a_fixed_number_of_queries(django_assert_max_num_queries):
    for index in range(6):
        scheduled(f"d{index}", {"every": 60 + index} if index % 2 else {"cron": f"{index} * * * *"})
        past_run(name=f"d{index}", trigger="schedule")
    # The schedules (each with its newest scheduled run's id), those runs, the overlaps, and one
    # task per schedule row for its words and schedule object.
    with django_assert_max_num_queries(4):
        listings = pipeline_schedules_list()
    assert len(listings) == 6 and all(item.last_run for item in listings)


def test_the_table_is_aligned_and_marks_disabled_and_overdue():
    scheduled("every-five", {"every": 300})
    scheduled("berlin-nine", {"cron": "0 9 * * *", "timezone": "Europe/Berlin", "overlap": "allow"})
    scheduled("off", {"every": 60})
    scheduled("off", None)
    beat_sent("every-five", datetime(2020, 1, 1, tzinfo=UTC))
    run = past_run(name="every-five", trigger="schedule")
    result = cli("list_schedules")
    assert result.exit_code == 0, result.stderr
    header, *lines = result.stdout.rstrip("\n").split("\n")
    names = ["DEFINITION", "SCHEDULE", "TIMEZONE", "OVERLAP", "ENABLED", "LAST RUN", "NEXT DUE"]
    starts = [header.index(name) for name in names]
    assert starts == sorted(starts) and header.startswith("DEFINITION")
    rows = {line.split()[0]: line for line in lines}
    assert list(rows) == ["berlin-nine", "every-five", "off"]
    expected = {
        "berlin-nine": ["berlin-nine", "At 09:00 AM (0 9 * * *)", "Europe/Berlin", "allow", "yes", "-", "20"],
        "every-five": ["every-five", "every 300s", "-", "skip", "yes", f"{run.pk} completed 20", "2020-01-01 00:05:00 (overdue)"],
        "off": ["off", "every 60s", "-", "skip", "no", "-", "-"],
    }
    for name, cells in expected.items():
        for start, cell in zip(starts, cells, strict=True):
            assert rows[name][start:].startswith(cell), (rows[name], cell)
            assert start == 0 or rows[name][start - 2:start] == "  ", rows[name]


def test_hostile_names_in_beats_table_are_escaped():
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=60, period=IntervalSchedule.SECONDS)
    # The admin can name a row anything; the listing escapes it.
    PeriodicTask.objects.create(name="pipeline:\x1b[2J\nforged", task=RUN_SCHEDULED_TASK, interval=every_minute)
    result = cli("list_schedules")
    assert result.exit_code == 0, result.stderr
    assert "\x1b" not in result.stdout and len(result.stdout.rstrip("\n").split("\n")) == 2
    assert "\\x1b[2J\\nforged" in result.stdout
    assert listed_json()[0]["definition"] == "\x1b[2J\nforged"


def test_no_schedules_says_so():
    assert cli("list_schedules").stdout == "No pipeline schedules.\n"
    assert listed_json() == []


def test_hostile_arguments_are_refused_in_one_line():
    verdicts = Verdicts()
    for text in HOSTILE_TEXT:
        verdicts.run("list_schedules", text, refused=True)
        verdicts.run("list_schedules", "--json", text, refused=True)
    verdicts.run("list_schedules", "--since", "1h", refused=True)
    verdicts.assert_clean()
