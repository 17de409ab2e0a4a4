"""manage.py doctor: one line per check, exit 0 unless one fails, never a secret value
(apps/orchestration/doctor.py). The checks against live workers, the environment one among them, are in
tests/workers/test_doctor.py."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from apps.orchestration.models import PipelineDefinition
from apps.orchestration.schedules import task_name

pytestmark = pytest.mark.django_db

SLACK_SECRET = "https://hooks.slack.com/services/T0DOCTOR1/B0DOCTOR2/doctorSecret123"
# The longest the whole command may take when the broker cannot be reached.
TIME_BOUND_SECONDS = 15


def nodes_definition(name: str, *nodes: dict, active: bool = True) -> PipelineDefinition:
    return PipelineDefinition.objects.create(
        name=name, config={"version": "1.0", "nodes": list(nodes)}, is_active=active
    )


def notify(config: dict, node_id: str = "notify") -> dict:
    return {"id": node_id, "type": "notify", "config": config}


@pytest.fixture(autouse=True)
def no_secrets_from_outside(monkeypatch):
    for name in ("SLACK_WEBHOOK_URL", "OPS_SLACK_URL", "OPENAI_API_KEY", "PAGERDUTY_ROUTING_KEY", "NOTIFY_EMAIL_TO"):
        monkeypatch.delenv(name, raising=False)


def test_database_is_ok_on_the_migrated_test_database(run_command):
    result = run_command("doctor", "--only", "database")
    assert result.stdout == "ok    database: reachable, migrations applied\n"
    assert result.exit_code == 0


# Migrations not applied: the test database is always migrated, and unmigrating it would break
# every other test sharing it, so that branch is not tested here.


def test_unreachable_broker_fails_within_the_time_bound(manage):
    nodes_definition("alerts-to-slack", notify({"driver": "slack"}))
    started = time.monotonic()
    # The variable set here counts for nothing: the workers run the nodes, and none can be asked.
    result = manage("doctor", env={"CELERY_BROKER_URL": "redis://127.0.0.1:1/0", "SLACK_WEBHOOK_URL": SLACK_SECRET},
                    timeout=60)
    elapsed = time.monotonic() - started
    assert "FAIL  broker: cannot connect to redis at 127.0.0.1:1 (OperationalError)\n" in result.stdout
    assert "FAIL  workers: not asked: the broker cannot be reached\n" in result.stdout
    assert (
        "warn  environment: no worker was asked about SLACK_WEBHOOK_URL: the broker cannot be reached\n"
    ) in result.stdout
    assert result.exit_code == 1
    assert elapsed < TIME_BOUND_SECONDS
    # Every check still prints its line.
    assert [line.split(":")[0].split()[-1] for line in result.stdout.splitlines()] == [
        "database", "broker", "workers", "beat", "environment", "outbound",
    ]
    for part in (SLACK_SECRET, "T0DOCTOR1", "doctorSecret123"):
        assert part not in result.stdout + result.stderr


def test_environment_alone_says_in_one_line_that_no_worker_could_be_asked(manage):
    nodes_definition("alerts-to-slack", notify({"driver": "slack"}))
    started = time.monotonic()
    result = manage("doctor", "--only", "environment", env={"CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}, timeout=60)
    assert result.stdout == (
        "warn  environment: no worker was asked about SLACK_WEBHOOK_URL: the broker cannot be reached\n"
    )
    assert result.exit_code == 0
    assert time.monotonic() - started < TIME_BOUND_SECONDS


def test_definitions_that_need_no_variable_ask_no_worker(run_command):
    nodes_definition("quiet", notify({"driver": "console"}))
    result = run_command("doctor", "--only", "environment")
    assert result.stdout == "ok    environment: the 1 active definitions name no variable\n"
    assert result.exit_code == 0


def test_missing_channel_is_a_warning(run_command):
    nodes_definition("to-nowhere", notify({"channel": "gone"}))
    result = run_command("doctor", "--only", "environment")
    assert result.stdout == "warn  environment: to-nowhere.notify: Notification channel not found: gone\n"
    assert result.exit_code == 0


@pytest.mark.parametrize("entry", ["0.0.0.0/0", "::/0"])
def test_allow_hosts_entry_allowing_everything_is_a_warning(run_command, settings, entry):
    settings.OUTBOUND_ALLOW_HOSTS = ["127.0.0.1", entry]
    result = run_command("doctor", "--only", "outbound")
    assert result.stdout.startswith(f"warn  outbound: OUTBOUND_ALLOW_HOSTS: {entry} allows every address")
    assert result.exit_code == 0


def test_unparseable_allow_hosts_entry_is_a_warning(run_command, settings):
    settings.OUTBOUND_ALLOW_HOSTS = ["http://ollama.internal:11434", "10.0.0.0/8", "ollama.internal"]
    result = run_command("doctor", "--only", "outbound")
    assert result.stdout == (
        "warn  outbound: OUTBOUND_ALLOW_HOSTS: 'http://ollama.internal:11434' is neither a host name nor a network\n"
    )


def test_sane_allow_hosts_are_ok(run_command, settings):
    settings.OUTBOUND_ALLOW_HOSTS = ["10.0.0.0/8", "ollama.internal"]
    result = run_command("doctor", "--only", "outbound")
    assert result.stdout == "ok    outbound: OUTBOUND_ALLOW_HOSTS allows 10.0.0.0/8, ollama.internal\n"


def periodic(name: str, last_run_at) -> None:
    every, _ = IntervalSchedule.objects.get_or_create(every=15, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name=name, task="orchestration.recover_runs", interval=every, last_run_at=last_run_at)


def test_beat_that_ticked_recently_is_ok(run_command):
    periodic("recover-runs", timezone.now() - timedelta(seconds=5))
    result = run_command("doctor", "--only", "beat")
    assert result.stdout.startswith("ok    beat: last tick ")
    assert result.exit_code == 0


def test_beat_that_never_ticked_is_a_warning_without_pipeline_schedules(run_command):
    result = run_command("doctor", "--only", "beat")
    assert result.stdout.startswith("warn  beat: has never ticked")
    assert result.exit_code == 0


def test_stale_beat_fails_when_a_pipeline_is_scheduled(run_command):
    periodic(task_name("nightly"), timezone.now() - timedelta(hours=2))
    result = run_command("doctor", "--only", "beat")
    assert result.stdout.startswith("FAIL  beat: last tick 2:00:0")
    assert "1 pipeline schedules are not launched" in result.stdout
    assert result.exit_code == 1


def test_beat_names_the_lease_holder_and_warns_of_a_second_beat(run_command):
    from apps.orchestration import beatstate

    periodic("recover-runs", timezone.now() - timedelta(seconds=5))
    assert beatstate.lease_take(holder="beat-host:100:aaaa")
    result = run_command("doctor", "--only", "beat")
    assert result.stdout.startswith("ok    beat: last tick ")
    assert "the lease is held by beat-host:100:aaaa (renewed 0s ago)" in result.stdout
    assert beatstate.lease_take(holder="other-host:200:bbbb") is False
    result = run_command("doctor", "--only", "beat")
    assert result.stdout == (
        "warn  beat: two beats on this database: the lease is held by beat-host:100:aaaa (renewed 0s ago); "
        "other-host:200:bbbb was refused it 0s ago and fires nothing (stop one of them)\n"
    )


def test_unknown_check_name_is_bad_input(run_command):
    result = run_command("doctor", "--only", "database,nonsense")
    assert result.exit_code == 2
    assert "--only takes check names among database, broker, workers, beat, environment, outbound" in result.stderr
