"""Runs for a host, end to end: two real workers on one machine serving the
hosts "alpha" and "beta" (MONITOR_HOST), runs sent to one of them, to every
live host, to the host an alert names, and to a host nobody serves."""
from __future__ import annotations

import json
import time

import pytest

from apps.orchestration.models import PipelineDefinition, PipelineRun
from tests.support import wait_for
from tests.workers.conftest import BrokerNamespace, Worker
from tests.workers.test_recovery import kill_group, slow_then

pytestmark = pytest.mark.subprocess

CONTEXT = {"version": "1.0", "nodes": [{"id": "metrics", "type": "context", "config": {"include": ["memory"]}}]}


@pytest.fixture(scope="module")
def two_hosts(base_env):
    """Workers serving "alpha" and "beta", stopped at the module's end."""
    started = []
    try:
        for host in ("alpha", "beta"):
            started.append(Worker({**base_env, "MONITOR_HOST": host}, concurrency=1))
        yield dict(zip(("alpha", "beta"), started, strict=True))
    finally:
        for worker in started:
            worker.stop()


@pytest.fixture
def context_config(tmp_path):
    path = tmp_path / "context.json"
    path.write_text(json.dumps(CONTEXT))
    return str(path)


def measured_host(run: PipelineRun) -> str:
    return run.result["node_results"]["metrics"]["output"]["host"]


def finished(run_ids) -> list[PipelineRun]:
    runs = list(PipelineRun.objects.filter(pk__in=run_ids).order_by("pk"))
    return runs if len(runs) == len(run_ids) and all(run.is_terminal for run in runs) else []


def test_each_worker_says_which_host_it_serves_and_which_queues_it_consumes(two_hosts):
    for host, worker in two_hosts.items():
        assert worker.wait_for_log(f"event=worker.serving host={host} queues=celery,host.{host}")


@pytest.mark.rabbitmq
def test_runs_sent_to_a_host_are_executed_only_by_its_worker(cli, two_hosts, context_config):
    launched = cli("shell", "-c", (
        "from apps.orchestration import inputs, launch, launchrequest, targeting, ticks\n"
        f"resolved = inputs.definition_resolve(config_path={context_config!r})\n"
        "for index in range(12):\n"
        "    host = ('alpha', 'beta')[index % 2]\n"
        "    targets = targeting.launch_targets(host=host, resolved=resolved, payload={}, source='cli')\n"
        "    [run] = launch.pipeline_runs_launch(targets=targets, request=launchrequest.LaunchRequest(resolved=resolved, payload={}))\n"
        "    print('launched', run.pk, run.target_host)\n"
    ))
    assert launched.exit_code == 0, launched.stderr
    sent = dict(line.split()[1:] for line in launched.stdout.split("\n") if line.startswith("launched "))
    assert len(sent) == 12
    runs = wait_for(lambda: finished([int(pk) for pk in sent]), what="12 runs to finish")
    for run in runs:
        assert run.status == "completed", run.error
        assert run.target_host == sent[str(run.pk)] == measured_host(run)
    # Neither worker's log mentions a run of the other host.
    for host, worker in two_hosts.items():
        others = [run.pk for run in runs if run.target_host != host]
        assert not any(f"event=run.start run_id={pk} " in worker.log() for pk in others)
    assert {run.target_host for run in runs} == {"alpha", "beta"}


@pytest.mark.rabbitmq
def test_host_all_makes_one_run_per_live_host_and_shows_each(cli, two_hosts, context_config):
    result = cli("run_pipeline", "--config", context_config, "--host", "all", "--wait", "--json", "--timeout", "120")
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert sorted(item["target_host"] for item in shown) == ["alpha", "beta"]
    assert len({item["group_id"] for item in shown}) == 1 and shown[0]["group_id"]
    for item in shown:
        assert item["status"] == "completed"
        assert item["node_results"]["metrics"]["output"]["host"] == item["target_host"]
    text = cli("run_pipeline", "--config", context_config, "--host", "ALL", "--wait", "--timeout", "120")
    assert text.exit_code == 0, text.stderr
    assert text.stdout.count("PIPELINE RESULT") == 2
    assert "Host: alpha\n" in text.stdout and "Host: beta\n" in text.stdout


def test_a_schedule_for_all_hosts_launches_a_run_on_each(cli, two_hosts, transactional_db):
    PipelineDefinition.objects.create(name="everywhere", config={**CONTEXT, "hosts": "all"})
    launched = cli("shell", "-c", (
        "from apps.orchestration import inputs, launch, launchrequest, targeting, ticks\n"
        "for run in ticks.pipeline_run_schedule(definition_name='everywhere', due='2026-11-29T10:00:00Z'):\n"
        "    print('launched', run.pk)\n"
    ))
    assert launched.exit_code == 0, launched.stderr
    ids = [int(line.split()[1]) for line in launched.stdout.split("\n") if line.startswith("launched ")]
    runs = wait_for(lambda: finished(ids), what="scheduled runs")
    assert sorted(measured_host(run) for run in runs) == ["alpha", "beta"]
    assert all(run.trigger == "schedule" and run.status == "completed" for run in runs)


def test_auto_follows_the_host_the_alert_names(cli, two_hosts, context_config):
    alert = json.dumps({"title": "Disk almost full", "host": "Beta", "severity": "critical"})
    result = cli("run_pipeline", "--config", context_config, "--host", "auto", "--payload", alert, "--wait", "--json")
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["target_host"] == "beta" and shown["node_results"]["metrics"]["output"]["host"] == "beta"
    nameless = cli(
        "run_pipeline", "--config", context_config, "--host", "auto", "--payload", '{"title": "x"}', "--wait", "--json"
    )
    assert nameless.exit_code == 0, nameless.stderr
    assert "The alert names no host: the run goes to the shared queue." in nameless.stderr
    assert json.loads(nameless.stdout)["target_host"] is None


def test_a_host_nobody_serves_ends_the_wait_with_exit_3_and_runs_when_its_worker_comes(
    cli, two_hosts, context_config, start_worker
):
    began = time.monotonic()
    waited = cli(
        "run_pipeline", "--config", context_config, "--host", "gamma", "--wait", "--timeout", "120",
        RUN_PICKUP_TIMEOUT_SECONDS="5",
    )
    assert waited.exit_code == 3, waited.stderr
    assert time.monotonic() - began < 110  # the pickup check ended it, not the timeout
    assert "no live worker serves its host 'gamma' (queue 'host.gamma')" in waited.stderr
    assert "MONITOR_HOST=gamma celery -A workers worker -l info" in waited.stderr
    unwaited = cli("run_pipeline", "--config", context_config, "--host", "gamma", "--json")
    assert unwaited.exit_code == 0, unwaited.stderr
    assert "Warning: no live worker serves host 'gamma' right now" in unwaited.stderr
    runs = list(PipelineRun.objects.filter(target_host="gamma"))
    assert len(runs) == 2 and all(run.status == "queued" for run in runs)
    doctor = cli("doctor", "--only", "workers")
    assert "queued runs wait for hosts no live worker serves: gamma (2)" in doctor.stdout, doctor.stdout
    start_worker(concurrency=1, MONITOR_HOST="gamma")
    done = wait_for(lambda: finished([run.pk for run in runs]), what="gamma's runs")
    assert [(run.status, measured_host(run)) for run in done] == [("completed", "gamma")] * 2


@pytest.mark.rabbitmq
def test_a_lost_message_of_a_host_run_is_sent_again_to_that_host(cli, two_hosts, context_config):
    made = cli("shell", "-c", (
        "from apps.orchestration import inputs, launch, launchrequest, targeting, ticks\n"
        f"resolved = inputs.definition_resolve(config_path={context_config!r})\n"
        # Stored and never sent: as if its message was lost with the broker's data.
        "print('made', launch.pipeline_run_create(request=launchrequest.LaunchRequest(resolved=resolved, payload={}, target_host='beta')).pk)\n"
    ))
    assert made.exit_code == 0, made.stderr
    run_id = int(made.stdout.split("made ")[1].split()[0])
    swept = cli("recover_runs", "--grace", "0")
    assert swept.exit_code == 0, swept.stderr
    [run] = wait_for(lambda: finished([run_id]), what="the recovered run")
    assert (run.status, run.target_host, measured_host(run)) == ("completed", "beta", "beta")


def test_a_run_whose_host_worker_died_ends_the_wait_and_is_taken_over_when_one_returns(
    cli, two_hosts, start_worker, transactional_db
):
    slow_then("slow-delta", 8)
    fast = {"RUN_LEASE_SECONDS": "4", "RUN_RECOVERY_GRACE_SECONDS": "0"}
    first = start_worker(concurrency=1, MONITOR_HOST="delta", **fast)
    launched = cli("run_pipeline", "--definition", "slow-delta", "--host", "delta", "--json")
    assert launched.exit_code == 0, launched.stderr
    run_id = json.loads(launched.stdout)["run_id"]
    wait_for(lambda: PipelineRun.objects.filter(pk=run_id, current_node="slow").exists(), what="the slow node")
    kill_group(first)
    # Only a worker of delta may take the run over, and none is alive: the wait says so instead of hanging.
    waited = cli("show_run", str(run_id), "--wait", "--timeout", "120")
    assert waited.exit_code == 3, waited.stderr
    assert "stopped renewing its lease, and no live worker serves its host 'delta'" in waited.stderr
    assert PipelineRun.objects.get(pk=run_id).status == "running"
    start_worker(concurrency=1, MONITOR_HOST="delta", **fast)
    [run] = wait_for(lambda: finished([run_id]), what="the takeover by delta's new worker")
    assert (run.status, run.result["node_results"]["first"]["output"]["host"]) == ("completed", "delta")
    assert "interrupted" in run.stages.filter(node_id="slow").order_by("attempt").first().errors[0]


def test_host_all_with_no_live_worker_exits_3_and_stores_nothing(cli, broker, context_config):
    empty = BrokerNamespace(broker.kind)  # a broker of its own, where no worker listens
    try:
        result = cli("run_pipeline", "--config", context_config, "--host", "all", "--wait", **empty.env)
    finally:
        empty.close()
    assert result.exit_code == 3, result.stderr
    assert result.stderr.startswith("CommandError: No live worker serves a host, so there is no host to run on")
    assert "MONITOR_HOST=<host> celery -A workers worker -l info" in result.stderr
    assert result.stdout == "" and not PipelineRun.objects.exists()
