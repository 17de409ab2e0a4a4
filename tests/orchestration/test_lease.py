"""Claims, fenced writes and takeovers, on the test database."""
import logging
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models.functions import Now

from apps.orchestration import heartbeat, lease
from apps.orchestration.models import PipelineRun, StageExecution
from tests.support import make_run

pytestmark = pytest.mark.django_db(transaction=True)

NODES = [{"id": "only", "type": "context", "config": {"include": ["memory"]}}]


@pytest.fixture
def run():
    return make_run(NODES)


def expire(run_id: int) -> None:
    PipelineRun.objects.filter(pk=run_id).update(lease_expires_at=Now() - timedelta(seconds=1))


def test_a_run_held_by_a_live_lease_is_not_claimed_twice(run):
    first = lease.run_claim(run_id=run.pk, token="host-a:1:a")
    assert first.reason == "claimed" and first.lease is not None
    second = lease.run_claim(run_id=run.pk, token="host-b:1:b")
    assert second.reason == "held" and second.lease is None
    assert PipelineRun.objects.get(pk=run.pk).claimed_by == "host-a:1:a"


def test_the_lease_is_set_on_database_time(run):
    lease.run_claim(run_id=run.pk, token="host-a:1:a")
    row = PipelineRun.objects.annotate(db_now=Now()).get(pk=run.pk)
    remaining = (row.lease_expires_at - row.db_now).total_seconds()
    assert 0 < remaining <= 30


def test_an_expired_lease_is_taken_over_and_the_old_holder_writes_nothing(run):
    old = lease.run_claim(run_id=run.pk, token="host-a:1:a")
    stage = StageExecution(run_id=run.pk, node_id="only", node_type="context")
    old.lease.write(run_fields={"current_node": "only"}, stage=stage, before_node=True)
    expire(run.pk)
    new = lease.run_claim(run_id=run.pk, token="host-b:1:b")
    assert new.reason == "taken_over"
    interrupted = StageExecution.objects.get(pk=stage.pk)
    assert interrupted.status == "failed"
    assert interrupted.errors == ["interrupted: the process executing it (host-a:1:a) was lost"]
    before = PipelineRun.objects.values().get(pk=run.pk)
    with pytest.raises(lease.LeaseLost):
        old.lease.write(run_fields={"error": "stale"}, stage=StageExecution(run_id=run.pk, node_id="only",
                                                                             node_type="context", attempt=2))
    assert PipelineRun.objects.values().get(pk=run.pk) == before
    assert StageExecution.objects.filter(run_id=run.pk).count() == 1


def test_a_cancel_request_before_a_node_writes_nothing(run):
    claim = lease.run_claim(run_id=run.pk, token="host-a:1:a")
    PipelineRun.objects.filter(pk=run.pk).update(cancel_requested_at=Now())
    with pytest.raises(lease.CancelRequested):
        claim.lease.write(
            run_fields={"current_node": "only"},
            stage=StageExecution(run_id=run.pk, node_id="only", node_type="context"),
            before_node=True,
        )
    assert not StageExecution.objects.exists()
    assert claim.lease.cancel_requested.is_set()


def test_a_write_reconnects_after_the_database_dropped_the_connection(run):
    if connection.vendor != "postgresql":
        pytest.skip("terminating a backend needs PostgreSQL")
    claim = lease.run_claim(run_id=run.pk, token="host-a:1:a")
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("apps.orchestration.lease").addHandler(handler)
    with connection.cursor() as cursor:
        try:
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        except Exception:  # noqa: BLE001 - the server may end the connection before it answers
            pass
    try:
        claim.lease.write(run_fields={"current_node": "only"},
                          stage=StageExecution(run_id=run.pk, node_id="only", node_type="context"))
    finally:
        logging.getLogger("apps.orchestration.lease").removeHandler(handler)
    assert StageExecution.objects.filter(run_id=run.pk).count() == 1
    assert any(line.startswith(f"event=db.retry what=recording run {run.pk} try=1") for line in seen), seen


def test_the_heartbeat_notices_a_lost_lease(run, settings):
    settings.RUN_LEASE_SECONDS = 1.5  # a beat every half second
    claim = lease.run_claim(run_id=run.pk, token="host-a:1:a")
    with heartbeat.Heartbeat(claim.lease):
        PipelineRun.objects.filter(pk=run.pk).update(claimed_by="host-b:1:b")
        assert claim.lease.lost.wait(30)
