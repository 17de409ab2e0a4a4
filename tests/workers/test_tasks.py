"""The execute_run task: how each way a delivery can end reaches Celery (and Flower)."""
import pytest
from django.utils import timezone

from apps.orchestration.lease import lease_end
from apps.orchestration.models import PipelineDefinition, PipelineRun, StageExecution
from tests.support import make_run
from workers.tasks import RunUnsuccessful, execute_run

pytestmark = pytest.mark.django_db

OK = [{"id": "shape", "type": "transform", "config": {"mapping": {"x": "payload.value"}}}]
FAILING = [{"id": "t", "type": "transform", "config": {"mapping": {"x": "payload.nothing"}}}]


def test_completed_run_returns_its_status():
    run = make_run(OK, payload={"value": 1})
    assert execute_run(run.pk, definition="p", trace_id=run.trace_id) == "completed"


def test_failed_run_raises_the_declared_expected_exception():
    run = make_run(FAILING, payload={"value": 1})
    with pytest.raises(RunUnsuccessful, match=rf"^run {run.pk} failed: Node 't' failed: Path not found: payload.nothing$"):
        execute_run(run.pk)
    assert RunUnsuccessful in execute_run.throws
    assert execute_run.acks_late and execute_run.acks_on_failure


def test_run_cancelled_while_running_raises():
    run = make_run(OK, payload={"value": 1}, status="running", cancel_requested_at=timezone.now())
    with pytest.raises(RunUnsuccessful, match=rf"^run {run.pk} cancelled: Cancelled on request before node 'shape'$"):
        execute_run(run.pk)


def test_run_finished_before_this_delivery_is_not_a_failure_of_it():
    run = make_run(FAILING, payload={"value": 1})
    with pytest.raises(RunUnsuccessful):
        execute_run(run.pk)
    # The same run delivered again (an old message with only the run id).
    assert execute_run(run.pk) is None
    assert StageExecution.objects.filter(run=run).count() == 1


def test_run_cancelled_while_queued_is_not_a_failure_of_the_task():
    run = make_run(OK, payload={"value": 1})
    # What cancel_run does to a queued run.
    PipelineRun.objects.filter(pk=run.pk).update(
        status="cancelled", finished_at=timezone.now(), error="Cancelled on request before it started"
    )
    assert execute_run(run.pk) is None


def test_run_held_by_a_live_process_returns_quietly():
    run = make_run(OK, payload={"value": 1})
    PipelineRun.objects.filter(pk=run.pk).update(
        status="running", claimed_by="elsewhere:1:abc", lease_expires_at=lease_end()
    )
    assert execute_run(run.pk) is None
    assert PipelineRun.objects.get(pk=run.pk).status == "running"


def test_run_at_its_concurrency_limit_returns_quietly():
    nodes = {"version": "1.0", "max_concurrent": 1, "nodes": OK}
    PipelineDefinition.objects.create(name="limited", config=nodes)
    busy = make_run(OK, payload={"value": 1}, name="limited")
    PipelineRun.objects.filter(pk=busy.pk).update(
        status="running", claimed_by="elsewhere:1:abc", lease_expires_at=lease_end()
    )
    waiting = make_run(OK, payload={"value": 1}, name="limited")
    assert execute_run(waiting.pk) is None
    assert PipelineRun.objects.get(pk=waiting.pk).status == "queued"


def test_unknown_run_returns_quietly():
    assert execute_run(999999) is None
