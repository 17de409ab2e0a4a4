"""Runs for a host: host names, a definition's host/hosts, what --host and
the dry run decide, and what is refused before anything is stored. Runs that
really travel to host queues and workers are in tests/workers/test_hosts.py."""
from __future__ import annotations

import json

import pytest

from apps.alerts.services import alert_hosts
from apps.hostnames import host_name, host_queue
from apps.orchestration import exit_codes, inputs, launch, launchrequest, run_actions, targeting, ticks
from apps.orchestration.models import PipelineDefinition, PipelineRun
from apps.orchestration.validation import validate_definition
from tests.orchestration.test_hostile_input import cli

pytestmark = pytest.mark.django_db

NODES = [{"id": "m", "type": "context", "config": {"include": ["memory"]}}]
ALERT_FLOW = [
    {"id": "in", "type": "ingest", "config": {"source": "generic"}, "next": "m"},
    {"id": "m", "type": "context", "config": {"include": ["memory"]}},
]


@pytest.fixture(autouse=True)
def no_embedded_broker(settings):
    # Launches here are never sent (the test's transaction does not commit): no broker is started for them.
    settings.CELERY_BROKER_IS_EMBEDDED = False


def config_file(tmp_path, **top) -> str:
    path = tmp_path / f"ctx-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps({"version": "1.0", "nodes": NODES, **top}))
    return str(path)


def test_host_names_are_compared_in_lower_case_and_auto_and_all_are_not_names():
    assert host_name("Web-01.Example.COM") == "web-01.example.com"
    assert host_name("db_2") == "db_2"
    for bad in ("", "-web", "web 01", "web/01", "é", "a" * 101, "auto", "ALL", None, 7):
        assert host_name(bad) is None, bad
    assert host_queue("web-01") == "host.web-01"


@pytest.mark.parametrize(
    "top, message",
    [
        ({"host": "web 01"}, "'host' must be a host name"),
        ({"host": ["web-01"]}, "'host' must be a host name"),
        ({"host": "all"}, "'host' must be a host name"),
        ({"hosts": "auto"}, "'hosts' must be \"all\" or a list of 1 to 100 host names"),
        ({"hosts": []}, "'hosts' must be \"all\" or a list of 1 to 100 host names"),
        ({"hosts": ["web-01", "bad host"]}, "'hosts' holds what is not a host name"),
        ({"hosts": ["web-01", "WEB-01"]}, "'hosts' names a host more than once"),
        ({"host": "web-01", "hosts": ["db-01"]}, "Cannot give both 'host' and 'hosts'"),
    ],
)
def test_invalid_host_fields_are_reported(top, message):
    messages = validate_definition({"version": "1.0", "nodes": NODES, **top})
    assert any(m.startswith(message) for m in messages), messages


@pytest.mark.parametrize("top", [{"host": "web-01"}, {"host": "auto"}, {"hosts": "all"}, {"hosts": ["a", "b"]}])
def test_valid_host_fields_pass(top):
    assert validate_definition({"version": "1.0", "nodes": NODES, **top}) == []


def test_the_alert_hosts_are_read_as_the_ingest_node_reads_them():
    payload = {"alerts": [{"name": "cpu", "host": "web-01"}, {"name": "disk", "host": "db-01"}, {"name": "x"}]}
    assert alert_hosts(payload=payload, source="generic") == ["web-01", "db-01"]
    resolved = launchrequest.ResolvedDefinition({"version": "1.0", "nodes": ALERT_FLOW}, "config", "x.json")
    targets = targeting.alert_target(config=resolved.config, payload={"title": "cpu", "server": "Web-01"}, source="cli")
    assert (targets.hosts, targets.fan_out, targets.note) == (["web-01"], False, None)
    nobody = targeting.alert_target(config=resolved.config, payload={"title": "cpu"}, source="cli")
    assert nobody.hosts == [""] and nobody.note == "The alert names no host: the run goes to the shared queue."
    odd = targeting.alert_target(config=resolved.config, payload={"title": "cpu", "host": "web 01;rm"}, source="cli")
    assert odd.hosts == [""] and "is not a host name (web 01;rm)" in odd.note


def test_the_option_wins_over_the_definition_and_the_definition_over_the_shared_queue():
    config = {"version": "1.0", "nodes": NODES, "host": "Web-01"}
    assert targeting.target_choice(host=None, config=config) == "web-01"
    assert targeting.target_choice(host="DB-01", config=config) == "db-01"
    assert targeting.target_choice(host="all", config=config) == "all"
    assert targeting.target_choice(host=None, config={"nodes": NODES, "hosts": ["A", "b"]}) == ["a", "b"]
    assert targeting.target_choice(host=None, config={"nodes": NODES}) == ""


@pytest.mark.django_db(transaction=True)  # commands close the connection a test transaction needs
def test_the_dry_run_says_where_the_run_would_go(tmp_path):
    path = config_file(tmp_path)
    shown = cli("run_pipeline", "--config", path, "--dry-run", "--host", "Web-01")
    assert shown.exit_code == 0 and "Environment: development\nHost: web-01\n\nNodes (1):" in shown.stdout
    alert = '{"title": "x", "host": "db-01"}'
    auto = cli("run_pipeline", "--config", path, "--dry-run", "--host", "auto", "--payload", alert)
    assert "\nHost: auto → db-01\n" in auto.stdout
    fan = cli("run_pipeline", "--config", config_file(tmp_path, hosts=["a", "b"]), "--dry-run", "--json")
    plan = json.loads(fan.stdout)
    assert (plan["host"], plan["hosts"]) == (None, ["a", "b"])
    plain = cli("run_pipeline", "--config", path, "--dry-run")
    assert "Host" not in plain.stdout
    assert PipelineRun.objects.count() == 0


@pytest.mark.parametrize(
    "extra, top, message",
    [
        (["--host", "web 01"], {}, "CommandError: --host must be a host name"),
        (["--host", "web-01", "--inline"], {}, "CommandError: Cannot specify --inline with a target host"),
        (["--idempotency-key", "k1"], {"hosts": ["a", "b"]}, "CommandError: --idempotency-key names one run"),
        (["--follow"], {"hosts": ["a", "b"]}, "CommandError: --follow follows one run; with several hosts use --wait"),
    ],
)
@pytest.mark.django_db(transaction=True)
def test_refused_host_launches_store_nothing(tmp_path, extra, top, message):
    result = cli("run_pipeline", "--config", config_file(tmp_path, **top), *extra)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert result.stdout == "" and PipelineRun.objects.count() == 0


def schedule_definition(**top) -> PipelineDefinition:
    return PipelineDefinition.objects.create(
        name="tick", config={"version": "1.0", "nodes": NODES, "schedule": {"every": 60}, **top}
    )


def test_a_tick_of_a_definition_with_hosts_launches_one_run_per_host_in_one_group():
    schedule_definition(hosts=["web-01", "db-01"])
    runs = ticks.pipeline_run_schedule(definition_name="tick", due="t1")
    assert [run.target_host for run in runs] == ["web-01", "db-01"]
    assert len({run.group_id for run in runs}) == 1 and runs[0].group_id is not None
    assert [run.idempotency_key for run in runs] == ["schedule:tick:t1@web-01", "schedule:tick:t1@db-01"]
    # Delivered again: nothing new (each host's run of the tick is still active).
    assert ticks.pipeline_run_schedule(definition_name="tick", due="t1") == []
    assert PipelineRun.objects.count() == 2


def test_overlap_is_judged_per_host_so_a_host_nobody_serves_holds_back_only_its_own_ticks():
    schedule_definition(hosts=["web-01", "down-01"])
    first = ticks.pipeline_run_schedule(definition_name="tick", due="t1")
    # web-01's run ended; down-01's waits for a worker that never comes.
    PipelineRun.objects.filter(pk=first[0].pk).update(status="completed", finished_at=first[0].created_at)
    second = ticks.pipeline_run_schedule(definition_name="tick", due="t2")
    assert [run.target_host for run in second] == ["web-01"]
    assert PipelineRun.objects.filter(target_host="down-01").count() == 1


def test_a_tick_of_a_definition_with_one_host_targets_it_without_a_group():
    schedule_definition(host="Web-01")
    [run] = ticks.pipeline_run_schedule(definition_name="tick", due="t1")
    assert (run.target_host, run.group_id, run.idempotency_key) == ("web-01", None, "schedule:tick:t1")


def test_a_long_tick_key_stays_within_what_a_key_may_hold():
    host = "h" * 100
    schedule_definition(hosts=[host, "b"])
    due = "2026-11-29T10:00:00.000000+00:00" + "x" * 120
    runs = ticks.pipeline_run_schedule(definition_name="tick", due=due)
    assert len(runs) == 2 and all(len(run.idempotency_key) <= 200 for run in runs)
    assert runs[0].idempotency_key != runs[1].idempotency_key


def test_a_retry_targets_the_host_of_the_run_it_retries(tmp_path):
    run = launch.pipeline_run_create(request=launchrequest.LaunchRequest(resolved=inputs.definition_resolve(config_path=config_file(tmp_path)), payload={}, target_host="web-01"))
    PipelineRun.objects.filter(pk=run.pk).update(status="failed", finished_at=run.created_at)
    assert run_actions.retry_request(run_id=run.pk).target_host == "web-01"


def test_a_group_exits_with_its_worst_code():
    worst = exit_codes.exit_code_worst
    assert worst([0, 0]) == 0 and worst([]) == 0
    assert worst([0, 4]) == 4 and worst([4, 3, 0]) == 3 and worst([3, 1, 4, 0]) == 1
