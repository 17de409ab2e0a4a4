"""Runs reach a true end with nobody watching: whole workers killed or frozen,
broker data wiped, database connections dropped, the run time limit.

Every wait is bounded and generous; the settings below make leases and
sweeps short so the faults resolve in seconds, not minutes.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from django.db import connection

from apps.orchestration.models import PipelineDefinition, PipelineRun, StageExecution
from tests.support import CLAIM_KEY, ROOT, Gate, StderrLines, wait_for

pytestmark = pytest.mark.subprocess

# Short but not tight: a heartbeat every 2 s keeps a 6 s lease on a busy machine.
FAST_RECOVERY = {
    "RUN_LEASE_SECONDS": "6",
    "RUN_RECOVERY_INTERVAL_SECONDS": "1",
    "RUN_RECOVERY_GRACE_SECONDS": "2",
}
KILL_ROUNDS = int(os.environ.get("TEST_KILL_ROUNDS", "5"))


def slow_then(name: str, seconds: float, then: dict | None = None) -> PipelineDefinition:
    """A definition whose first node takes ``seconds`` (a CPU sample), then ``then``."""
    slow = {"id": "slow", "type": "context", "config": {"include": ["cpu"], "options": {"cpu": {"interval": seconds}}}}
    nodes = [{"id": "first", "type": "context", "config": {"include": ["memory"]}, "next": "slow"}, slow]
    if then:
        slow["next"] = then["id"]
        nodes.append(then)
    return PipelineDefinition.objects.create(name=name, config={"version": "1.0", "nodes": nodes})


def launch(cli, name: str) -> PipelineRun:
    result = cli("run_pipeline", "--definition", name, "--json")
    assert result.exit_code == 0, result.stderr
    return PipelineRun.objects.get(pk=json.loads(result.stdout)["run_id"])


def node_started(worker, run: PipelineRun, node: str) -> str:
    return f"event=node.start run_id={run.pk} trace_id={run.trace_id} definition={run.origin} node={node}"


def record(run: PipelineRun):
    """Everything stored about a run and its stages."""
    row = PipelineRun.objects.values().get(pk=run.pk)
    stages = list(StageExecution.objects.filter(run=run).order_by("pk").values())
    return row, stages


def kill_group(worker) -> None:
    """SIGKILL the worker's whole process group, as the OOM killer or `docker kill` would."""
    os.killpg(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(30)


def test_runs_of_whole_workers_killed_again_and_again_are_completed_by_the_next(cli, start_worker, transactional_db):
    # Long enough that the kill lands inside the node even when the log reaches us late.
    slow_then("slow", 4)
    worker = start_worker(concurrency=1, **FAST_RECOVERY)
    runs = []
    for round_ in range(KILL_ROUNDS):
        run = launch(cli, "slow")
        assert worker.wait_for_log(node_started(worker, run, "slow")), worker.log()
        kill_group(worker)
        runs.append(run)
        # A watcher of the run is told the holder is gone, and keeps waiting for the recovery
        # (the first one follows it, and sees the takeover as it happens).
        how = "--follow" if round_ == 0 else "--wait"
        watcher = StderrLines(cli.popen("show_run", str(run.pk), how, "--timeout", "120", "--json"))
        try:
            if round_ == 0:
                # The follower has told of the dead holder before a worker may take the run over.
                watcher.wait_for(f"The worker holding run {run.pk} (")
            # The next worker takes the run over, then executes the next round's run.
            worker = start_worker(concurrency=1, **FAST_RECOVERY)
            code, out, _ = watcher.finish(150)
        finally:
            watcher.stop()
        err = watcher.text()
        assert code == 0, err + worker.log()
        assert json.loads(out)["status"] == "completed"
        if round_ == 0:
            assert f"The worker holding run {run.pk} (" in err and "stopped renewing its lease" in err, err
            assert "↻ run taken over by worker " in err and "✓ slow (context) succeeded" in err, err
            assert err.count("✓ first (context) succeeded") == 1, err
        assert worker.wait_for_log(f"event=run.recovered run_id={run.pk} ")
        assert "reason=lease_expired" in worker.log()
    for run in runs:
        stages = list(StageExecution.objects.filter(run=run).values_list("node_id", "attempt", "status").order_by("pk"))
        # The node that had finished is not run again; the interrupted one is recorded and run again.
        assert stages == [("first", 1, "succeeded"), ("slow", 1, "failed"), ("slow", 2, "succeeded")], stages
        interrupted = StageExecution.objects.get(run=run, node_id="slow", attempt=1)
        assert interrupted.errors[0].startswith("interrupted: the process executing it (")
    assert not StageExecution.objects.filter(status="running").exists()


def test_a_whole_worker_killed_during_a_runs_first_node_leaves_it_recorded_as_interrupted(
    cli, start_worker, transactional_db
):
    # A run's first node has no write of its own before it starts (its claim stands for that).
    slow = {"id": "slow", "type": "context", "config": {"include": ["cpu"], "options": {"cpu": {"interval": 5}}}}
    PipelineDefinition.objects.create(name="slow-first", config={"version": "1.0", "nodes": [slow]})
    worker = start_worker(concurrency=1, **FAST_RECOVERY)
    run = launch(cli, "slow-first")
    assert worker.wait_for_log(node_started(worker, run, "slow")), worker.log()
    kill_group(worker)
    assert not StageExecution.objects.filter(run=run).exists()
    worker = start_worker(concurrency=1, **FAST_RECOVERY)
    done = wait_for(
        lambda: PipelineRun.objects.filter(pk=run.pk, status__in=PipelineRun.TERMINAL).first(),
        timeout=150, what="the run taken over and ended",
    )
    assert done.status == "completed", done.error + worker.log()
    stages = list(StageExecution.objects.filter(run=run).order_by("pk").values_list("node_id", "attempt", "status"))
    assert stages == [("slow", 1, "failed"), ("slow", 2, "succeeded")], stages
    interrupted = StageExecution.objects.get(run=run, node_id="slow", attempt=1)
    assert interrupted.errors[0].startswith("interrupted: the process executing it (")
    assert interrupted.started_at == done.started_at  # the claim's time
    assert done.result["node_results"]["slow"]["attempts"] == 2


def test_worker_frozen_past_its_lease_writes_nothing_after_it_wakes(cli, start_worker, transactional_db):
    from tests.httpserver import start_server

    server, stop_server = start_server()
    try:
        hook = {"id": "notify", "type": "notify", "config": {"driver": "webhook", "url_env": "TEST_HOOK_URL"}}
        slow_then("frozen", 3, then=hook)
        env = {**FAST_RECOVERY, "TEST_HOOK_URL": server.url("/hook"), "OUTBOUND_ALLOW_HOSTS": "127.0.0.1"}
        frozen = start_worker(concurrency=1, **env)
        run = launch(cli, "frozen")
        assert frozen.wait_for_log(node_started(frozen, run, "slow")), frozen.log()
        os.killpg(frozen.proc.pid, signal.SIGSTOP)
        try:
            other = start_worker(concurrency=1, **env)
            shown = cli("show_run", str(run.pk), "--wait", "--timeout", "120", "--json")
            assert shown.exit_code == 0, shown.stderr + other.log()
            before = record(run)
            sent = len(server.requests)
        finally:
            os.killpg(frozen.proc.pid, signal.SIGCONT)
        # Awake again, the old holder finds its lease gone at its next write and stops there.
        assert frozen.wait_for_log(f"event=run.lease_lost run_id={run.pk} "), frozen.log()
        woken = frozen.log().split(f"event=run.lease_lost run_id={run.pk} ")[1]
        assert record(run) == before
        # The node after the frozen one was delivered by the worker that took the run over, and
        # nothing more by the woken one. (Once, unless that worker's own lease ran out under load
        # and the run was taken over again: then the same key, for the receiver to deduplicate.)
        assert len(server.requests) == sent >= 1, (server.requests, other.log())
        assert {request["headers"]["idempotency-key"] for request in server.requests} == {f"{run.pk}-notify"}
        assert "event=node.start" not in woken
    finally:
        stop_server()


def wipe_broker(broker) -> None:
    """Lose every message, as a broker restarted without its data would (on RabbitMQ, whose
    test broker is shared: every message of the run queue)."""
    if broker.kind == "rabbitmq":
        broker.purge()
    elif broker.kind == "embedded":
        from apps.broker.embedded import EmbeddedBroker

        with EmbeddedBroker(Path(broker.env["EMBEDDED_BROKER_DIR"])).client() as client:
            client.flushall()
    else:
        client = redis.Redis.from_url(broker.url)
        client.flushdb()
        client.set(CLAIM_KEY, os.getpid(), ex=3600)  # keep this test database claimed


@pytest.mark.rabbitmq
def test_run_whose_message_was_wiped_is_sent_again_and_completes(cli, broker, start_worker, transactional_db):
    slow_then("lost", 0.1)
    run = launch(cli, "lost")
    wipe_broker(broker)
    worker = start_worker(**FAST_RECOVERY)
    shown = cli("show_run", str(run.pk), "--wait", "--timeout", "120", RUN_PICKUP_TIMEOUT_SECONDS="0.1")
    assert shown.exit_code == 0, shown.stderr + worker.log()
    assert worker.wait_for_log(f"event=run.recovered run_id={run.pk} trace_id={run.trace_id} ")
    assert "reason=lost_message" in worker.log()


@pytest.mark.rabbitmq
def test_recover_runs_command_sends_a_lost_run_once(cli, broker, start_worker, transactional_db):
    slow_then("lost", 0.1)
    run = launch(cli, "lost")
    wipe_broker(broker)
    first = cli("recover_runs", "--grace", "0")
    assert first.exit_code == 0, first.stderr
    assert first.stdout == f"re-sent run {run.pk} (trace id {run.trace_id}): lost message\n1 run(s) re-sent\n"
    # Its message now waits in the queue: a second sweep sends nothing more.
    again = cli("recover_runs", "--grace", "0")
    assert again.stdout == "0 run(s) re-sent\n"
    start_worker()
    assert cli("show_run", str(run.pk), "--wait", "--timeout", "120").exit_code == 0


@pytest.mark.rabbitmq
def test_a_purged_queues_runs_complete_within_a_minute_each_once_and_a_healthy_backlog_is_not_resent(
    cli, broker, start_worker, gate, transactional_db
):
    # The sweep's own settings (grace and interval as deployed): the re-send is due within a minute.
    PipelineDefinition.objects.create(name="held", config={"version": "1.0", "defaults": Gate.DEFAULTS, "nodes": [
        gate.node("held"),
    ]})
    slow_then("behind", 0.1)
    worker = start_worker(concurrency=1, **gate.env)
    held = launch(cli, "held")
    assert worker.wait_for_log(node_started(worker, held, "held")), worker.log()
    behind = [launch(cli, "behind") for _ in range(3)]
    # Three messages wait behind the held run: the sweep sees them there and sends nothing.
    swept = cli("recover_runs", "--grace", "0")
    assert swept.stdout == "0 run(s) re-sent\n", swept.stdout + swept.stderr
    assert broker.purge() == 3
    gate.open()
    wait_for(
        lambda: PipelineRun.objects.filter(pk__in=[run.pk for run in behind], status="completed").count() == 3,
        timeout=60, what="the purged runs to complete within a minute",
    )
    for run in behind:
        assert worker.log().count(f"event=node.start run_id={run.pk} ") == 2, worker.log()  # first, slow: once each
        assert StageExecution.objects.filter(run=run).count() == 2
        assert f"event=run.recovered run_id={run.pk} trace_id={run.trace_id} " in worker.log()


def test_dropped_database_connection_mid_node_does_not_fail_the_run(cli, start_worker, transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip("terminating a backend needs PostgreSQL")
    from tests.httpserver import start_server

    server, stop_server = start_server()
    server.slow = True  # the node waits for its answer until the test releases it
    server.hold_seconds = Gate.HOLD_SECONDS
    try:
        PipelineDefinition.objects.create(name="hook", config={"version": "1.0", "nodes": [
            {"id": "notify", "type": "notify", "config": {"driver": "webhook", "url_env": "TEST_HOOK_URL"},
             "next": "after"},
            {"id": "after", "type": "context", "config": {"include": ["memory"]}},
        ]})
        worker = start_worker(concurrency=1, TEST_HOOK_URL=server.url("/hook"), OUTBOUND_ALLOW_HOSTS="127.0.0.1")
        run = launch(cli, "hook")
        wait_for(lambda: server.requests, what="the webhook request")
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            assert cursor.fetchall(), "no worker connection to drop"
        server.release.set()
        shown = cli("show_run", str(run.pk), "--wait", "--timeout", "120", "--json")
        assert shown.exit_code == 0, shown.stderr + worker.log()
        assert json.loads(shown.stdout)["executed_nodes"] == ["notify", "after"]
        assert len(server.requests) == 1
        assert not StageExecution.objects.filter(run=run).exclude(status="succeeded").exists()
        assert "event=db.retry" in worker.log()
    finally:
        server.release.set()
        stop_server()


def test_wait_behind_a_busy_worker_keeps_waiting_until_its_timeout(cli, start_worker, gate, transactional_db):
    # Busy until the waiting CLI has said so: longer than its start, the pickup timeout and the workers' answer.
    PipelineDefinition.objects.create(
        name="busy", config={"version": "1.0", "defaults": Gate.DEFAULTS, "nodes": [gate.node("busy")]}
    )
    slow_then("next", 0.1)
    worker = start_worker(concurrency=1, **gate.env)
    launch(cli, "busy")
    wait_for(gate.reached, what="the busy run's node")
    waiting = StderrLines(cli.popen(
        "run_pipeline", "--definition", "next", "--wait", "--timeout", "90", RUN_PICKUP_TIMEOUT_SECONDS="1"
    ))
    try:
        waiting.wait_for("waiting for a free one")
        gate.open()
        code, _, _ = waiting.finish()
    finally:
        waiting.stop()
    assert code == 0, waiting.text() + worker.log()
    run = PipelineRun.objects.get(definition__name="next")
    assert f"Run {run.pk} is still queued" in waiting.text()
    assert "1 live worker consumes its queue, waiting for a free one." in waiting.text()
    assert "No worker" not in waiting.text()


@pytest.mark.rabbitmq
def test_cancel_reaches_the_worker_during_the_node_and_no_later_node_starts(cli, start_worker, gate, transactional_db):
    # The node waits at the gate until the cancel request has been seen, however slowly cancel_run starts.
    PipelineDefinition.objects.create(name="slow", config={"version": "1.0", "defaults": Gate.DEFAULTS, "nodes": [
        gate.node("slow", "after"), {"id": "after", "type": "context", "config": {"include": ["memory"]}},
    ]})
    worker = start_worker(**gate.env)
    run = launch(cli, "slow")
    assert worker.wait_for_log(node_started(worker, run, "slow"))
    cancel = cli("cancel_run", str(run.pk))
    assert cancel.exit_code == 0
    assert cancel.stdout == (
        f"Cancellation of run {run.pk} requested: node 'slow' is not interrupted, and no node after it starts.\n"
    )
    assert worker.wait_for_log(f"event=run.cancel_requested run_id={run.pk}")
    # Seen while the slow node was still running, not at its end.
    assert f"event=node.end run_id={run.pk} trace_id={run.trace_id} definition=slow node=slow" not in worker.log()
    gate.open()
    shown = cli("show_run", str(run.pk), "--wait", "--timeout", "90")
    assert shown.exit_code == 4, shown.stderr
    assert shown.stderr.strip() == "CommandError: Pipeline cancelled: Cancelled on request before node 'after'"
    assert StageExecution.objects.get(run=run, node_id="slow").status == "succeeded"  # not interrupted
    assert not StageExecution.objects.filter(run=run, node_id="after").exists()


def test_run_time_limit_fails_the_run_once(cli, start_worker, transactional_db):
    PipelineDefinition.objects.create(name="long", config={
        "version": "1.0", "defaults": {"max_retries": 2},
        "nodes": [{"id": "long", "type": "context", "config": {"include": ["cpu"], "options": {"cpu": {"interval": 8}}}}],
    })
    worker = start_worker(concurrency=1, RUN_TIME_LIMIT_SECONDS="2")
    run = launch(cli, "long")
    shown = cli("show_run", str(run.pk), "--wait", "--timeout", "60")
    assert shown.exit_code == 1, shown.stderr
    assert shown.stderr.strip() == "CommandError: Pipeline failed: Run stopped: it ran past the run time limit of 2s"
    # One attempt, recorded as stopped: no retry of the node, no redelivery of the run.
    assert list(StageExecution.objects.filter(run=run).values_list("attempt", "status")) == [(1, "failed")]
    # The task ends as a failure (Flower counts it), once.
    assert worker.wait_for_log("raised expected: RunUnsuccessful")
    assert worker.log().count(f"event=run.start run_id={run.pk} ") == 1


def test_worker_refuses_a_pool_where_node_time_limits_cannot_hold(base_env):
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "-P", "threads", "-l", "info"],
        cwd=ROOT, env=base_env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "Refusing to start: node time limits cannot hold on the 'threads' pool" in proc.stderr
    assert "Traceback" not in proc.stderr
