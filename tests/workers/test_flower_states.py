"""What Flower sees of runs: task events and worker log lines from a real worker."""
import re
import sys

import pytest

from apps.orchestration.models import PipelineDefinition, PipelineRun, StageExecution
from tests.support import wait_for
from tests.workers.conftest import CollectedProcess

pytestmark = pytest.mark.subprocess

OK = [{"id": "shape", "type": "transform", "config": {"mapping": {"x": "payload.value"}}}]
FAILING = [{"id": "t", "type": "transform", "config": {"mapping": {"x": "payload.nothing"}}}]


class EventWorker(CollectedProcess):
    """A real worker sending task events, with heartbeats (so an event monitor can tell it is listening)."""

    def __init__(self, env: dict):
        super().__init__(
            [sys.executable, "-m", "celery", "-A", "workers", "worker", "-l", "info", "-c", "1",
             "--without-gossip", "--without-mingle", "-n", f"flower{id(self)}@%h"],
            {**env, "CELERY_TASK_EVENTS": "1"},
        )
        if not self.wait_for_log(" ready."):
            self.stop()
            raise RuntimeError("worker did not become ready:\n" + self.log())


@pytest.fixture
def monitored(base_env, transactional_db):
    """A worker with task events and `celery events --dump` (what Flower reads) on the same broker."""
    worker = EventWorker(base_env)
    dump = CollectedProcess([sys.executable, "-m", "celery", "-A", "workers", "events", "--dump"], base_env)
    try:
        # A heartbeat event in the dump means its queue is bound: no task event is missed from here on.
        assert dump.wait_for_log(" heartbeat"), dump.log()
        yield worker, dump
    finally:
        dump.stop()
        worker.stop()


def task_id(log: str, run: PipelineRun) -> str:
    found = set(re.findall(rf"Task orchestration\.execute_run\[(run-{run.pk}-[0-9a-f]+)\] received", log))
    assert len(found) == 1, log
    return found.pop()


def broker_is_empty(broker) -> bool:
    """Whether no queue of the broker holds a message and none is delivered but unacknowledged."""
    with broker.client() as client:
        queued = [key for key in client.scan_iter() if client.type(key) == b"list" and client.llen(key)]
        return not queued and not client.hlen("unacked")


def test_failed_run_is_a_failed_task_once_and_completed_one_a_success(cli, broker, monitored):
    worker, dump = monitored
    PipelineDefinition.objects.create(name="failing", config={"version": "1.0", "nodes": FAILING})
    PipelineDefinition.objects.create(name="fine", config={"version": "1.0", "nodes": OK})

    failed = cli(
        "run_pipeline", "--definition", "failing", "--wait", "--trace-id", "trace-fail-1", CELERY_TASK_EVENTS="1"
    )
    assert failed.exit_code == 1, failed.stderr
    done = cli("run_pipeline", "--definition", "fine", "--wait", "--trace-id", "trace-ok-1",
               "--payload", '{"value": 1}', CELERY_TASK_EVENTS="1")
    assert done.exit_code == 0, done.stderr
    bad, good = PipelineRun.objects.get(trace_id="trace-fail-1"), PipelineRun.objects.get(trace_id="trace-ok-1")

    assert worker.wait_for_log("succeeded in")
    # Once the broker holds no message, queued or delivered and unacknowledged, none can come back.
    wait_for(lambda: broker_is_empty(broker), what="the broker to hold no message")
    log = worker.log()
    bad_id, good_id = task_id(log, bad), task_id(log, good)
    # Celery's own lines: the failure declared as expected (INFO, no traceback), the success with its status.
    assert re.search(
        rf"level=INFO .*Task orchestration\.execute_run\[{bad_id}\] raised expected: RunUnsuccessful\(\\?\"run {bad.pk} "
        r"failed: Node 't' failed: Path not found: payload\.nothing\\?\"\)",
        log,
    ), log
    assert re.search(rf"Task orchestration\.execute_run\[{good_id}\] succeeded in [0-9.e-]+s: 'completed'", log), log
    assert "Traceback" not in log and "raised unexpected" not in log
    # Not redelivered: one delivery, one attempt, and nothing left unacknowledged on the broker.
    assert log.count(f"[{bad_id}] received") == 1
    assert StageExecution.objects.filter(run=bad).count() == 1
    unacked = cli(
        "shell", "-v", "0", "-c",
        "from apps.orchestration.events import broker_client; print(broker_client().hlen('unacked'))",
    )
    assert unacked.stdout.strip() == "0", unacked.stderr

    # What Flower shows: the run's identity in the task's arguments, and the true outcome.
    assert dump.wait_for_log(f"task failed: orchestration.execute_run({bad_id})"), dump.log()
    assert dump.wait_for_log(f"task succeeded: orchestration.execute_run({good_id})"), dump.log()
    events = dump.log()
    assert (
        f"task received: orchestration.execute_run({bad_id}) args=[{bad.pk}] "
        "kwargs={'definition': 'failing', 'trace_id': 'trace-fail-1'}"
    ) in events
    assert f"task sent: orchestration.execute_run({good_id}) args=[{good.pk}] " in events
    assert events.count(f"task received: orchestration.execute_run({bad_id})") == 1


def test_old_message_for_a_finished_run_is_a_quiet_success(cli, monitored):
    worker, _ = monitored
    PipelineDefinition.objects.create(name="failing", config={"version": "1.0", "nodes": FAILING})
    assert cli("run_pipeline", "--definition", "failing", "--wait").exit_code == 1
    run = PipelineRun.objects.get()
    # A message as sent before messages carried labels: the run id only.
    sent = cli(
        "shell", "-c",
        f"from workers.celery import app; "
        f"app.send_task('orchestration.execute_run', args=[{run.pk}], task_id='old-{run.pk}')",
    )
    assert sent.exit_code == 0, sent.stderr
    assert worker.wait_for_log(f"Task orchestration.execute_run[old-{run.pk}] succeeded in"), worker.log()
    assert re.search(rf"\[old-{run.pk}\] succeeded in [0-9.e-]+s: None", worker.log())
    assert StageExecution.objects.filter(run=run).count() == 1
