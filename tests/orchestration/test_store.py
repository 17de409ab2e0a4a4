"""The run store's contract, on whichever database the pass runs (SQLite and
PostgreSQL): each hand-written statement does what its function says, and
the Django internals it builds on are still there."""
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Now

from apps.orchestration import store, storeinserts
from apps.orchestration.launchrequest import ResolvedDefinition
from apps.orchestration.models import PipelineRun, StageExecution

pytestmark = pytest.mark.django_db(transaction=True)

NODES = [{"id": "a", "type": "context", "config": {}, "next": "b"}, {"id": "b", "type": "context", "config": {}}]


def queued_run(**config) -> PipelineRun:
    resolved = ResolvedDefinition({"version": "1.0", "nodes": NODES, **config}, "config", "p.json")
    run = PipelineRun(
        trace_id="t-1", origin=resolved.origin, origin_kind=resolved.kind, config_snapshot=resolved.config,
        payload={"text": "é ✓", "n": 1},
    )
    storeinserts.row_insert(run, db_time=("published_at",))
    return run


def test_django_internals_the_store_builds_on_are_there():
    compiler = PipelineRun.objects.annotate(db_now=Now()).filter(pk=0).order_by().query.get_compiler(
        connection=connection
    )
    sql, params = compiler.as_sql()
    assert sql.startswith("SELECT ") and list(params) == [0]
    assert isinstance(compiler.select, list) and callable(compiler.get_converters)
    assert callable(PipelineRun.from_db) and callable(connection.ops.adapt_json_value)
    assert callable(connection.ops.adapt_datetimefield_value)
    if connection.vendor == "postgresql":
        assert connection.features.uses_server_side_binding


def test_row_insert_stores_the_row_and_sets_its_key_with_the_database_time():
    run = queued_run()
    assert run.pk is not None and "published_at" not in run.__dict__
    stored = PipelineRun.objects.get(pk=run.pk)
    assert (stored.status, stored.payload, stored.trace_id) == ("queued", {"text": "é ✓", "n": 1}, "t-1")
    assert stored.published_at is not None and stored.created_at is not None


def test_rows_insert_stores_each_row_as_row_insert_does_and_skips_a_taken_key():
    resolved = ResolvedDefinition({"version": "1.0", "nodes": NODES}, "config", "p.json")
    group = uuid.uuid4()

    def row(key: str, **fields) -> PipelineRun:
        return PipelineRun(
            trace_id="t-1", idempotency_key=key, origin=resolved.origin, origin_kind=resolved.kind,
            config_snapshot=resolved.config, target_host="web-1", group_id=group, trigger="schedule",
            payload={"text": 'é ✓ "q" \\ \t', "n": 1.5, "none": None, "flags": [True, False], "big": 2**62}, **fields,
        )

    ended = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    one, failed_one = row("k-0"), row("k-f0", status="failed", error="it's \"broken\"", finished_at=ended, duration_ms=0)
    storeinserts.row_insert(one, db_time=("published_at",))
    storeinserts.row_insert(failed_one, db_time=("published_at",))
    many = [row("k-0"), row("k-1"), row("k-f1", status="failed", error=failed_one.error, finished_at=ended, duration_ms=0)]
    with transaction.atomic():
        stored = storeinserts.rows_insert(many, unique="idempotency_key", db_time=("published_at",))
    assert stored == many[1:] and many[0].pk is None  # k-0 was taken: skipped, not an error
    assert all(run.pk is not None and "published_at" not in run.__dict__ for run in stored)
    same = [f.attname for f in PipelineRun._meta.concrete_fields if f.attname not in ("id", "idempotency_key")]

    def values(run: PipelineRun) -> dict:
        return PipelineRun.objects.filter(pk=run.pk).values(*same).get()

    for mine, theirs in ((many[1], one), (many[2], failed_one)):
        got, want = values(mine), values(theirs)
        assert got.pop("published_at") is not None and want.pop("published_at") is not None
        assert abs((got.pop("created_at") - want.pop("created_at")).total_seconds()) < 60
        assert got == want
    assert values(many[2])["finished_at"] == ended and values(many[1])["group_id"] == group


def test_run_read_carries_the_database_time_and_refuses_an_unknown_id():
    run = queued_run()
    read = store.run_read(run.pk)
    assert read.pk == run.pk and read.payload == {"text": "é ✓", "n": 1}
    assert abs((read.db_now - read.created_at).total_seconds()) < 300
    with pytest.raises(PipelineRun.DoesNotExist):
        store.run_read(run.pk + 1000)


def test_a_queued_run_is_claimed_once_with_its_first_node_current():
    run = queued_run()
    claimed = store.run_claim_queued(run.pk, "host:1:a")
    assert (claimed.status, claimed.claimed_by, claimed.current_node) == ("running", "host:1:a", "a")
    assert claimed.lease_expires_at > claimed.db_now
    assert store.run_claim_queued(run.pk, "host:2:b") is None
    assert store.run_claim_update(run_id=run.pk, token="host:2:b", first_node="a") == 0


def test_a_limited_definition_is_claimed_by_the_conditional_update_only():
    run = queued_run(max_concurrent=1)
    assert store.run_claim_queued(run.pk, "host:1:a") is None  # run_claim counts the slots first
    with transaction.atomic():
        store.definition_slot_lock(origin_kind=run.origin_kind, origin=run.origin)
        assert store.run_claim_update(run_id=run.pk, token="host:1:a", first_node="a") == 1
    stored = PipelineRun.objects.get(pk=run.pk)
    assert (stored.status, stored.claimed_by, stored.current_node) == ("running", "host:1:a", "a")


def test_a_fenced_write_writes_for_its_holder_only():
    run = queued_run()
    store.run_claim_queued(run.pk, "host:1:a")
    stage = StageExecution(run_id=run.pk, node_id="a", node_type="context", started_at=store.run_read(run.pk).db_now)
    assert not store.run_write(run_id=run.pk, token="host:2:b", fields={"current_node": "x"}, stages=[stage],
                               unless_cancelled=True, durable=False)
    assert stage.pk is None and not StageExecution.objects.filter(run_id=run.pk).exists()
    assert store.run_write(run_id=run.pk, token="host:1:a", fields={"error": "e", "heartbeat_at": store.DbTime()},
                           stages=[stage], unless_cancelled=True, durable=False)
    assert StageExecution.objects.get(pk=stage.pk).node_id == "a"
    stage.status, stage.output = StageExecution.Status.SUCCEEDED, {"ok": True}
    assert store.run_write(run_id=run.pk, token="host:1:a", fields={"finished_at": Now()}, stages=[stage],
                           unless_cancelled=True, durable=True)
    rows = StageExecution.objects.filter(run_id=run.pk)
    assert [(row.pk, row.status, row.output) for row in rows] == [(stage.pk, "succeeded", {"ok": True})]
    stored = PipelineRun.objects.get(pk=run.pk)
    assert stored.error == "e" and stored.finished_at is not None and stored.heartbeat_at is not None


def test_a_fenced_write_unless_cancelled_stops_at_a_cancel_request():
    run = queued_run()
    store.run_claim_queued(run.pk, "host:1:a")
    PipelineRun.objects.filter(pk=run.pk).update(cancel_requested_at=Now())
    assert not store.run_write(run_id=run.pk, token="host:1:a", fields={"error": "e"}, stages=[],
                               unless_cancelled=True, durable=False)
    assert store.run_write(run_id=run.pk, token="host:1:a", fields={"error": "e"}, stages=[],
                           unless_cancelled=False, durable=False)
    assert PipelineRun.objects.get(pk=run.pk).error == "e"


def test_a_fenced_write_refuses_an_orm_expression_it_cannot_write_out():
    run = queued_run()
    store.run_claim_queued(run.pk, "host:1:a")
    with pytest.raises(TypeError):
        store.run_write(run_id=run.pk, token="host:1:a", fields={"duration_ms": F("duration_ms")}, stages=[],
                        unless_cancelled=True, durable=False)


def test_the_database_time_with_seconds_added_lands_in_the_future():
    run = queued_run()
    store.run_claim_queued(run.pk, "host:1:a")
    store.run_write(run_id=run.pk, token="host:1:a", fields={"lease_expires_at": store.DbTime(3600)}, stages=[],
                    unless_cancelled=True, durable=False)
    read = store.run_read(run.pk)
    assert timedelta(seconds=3500) < read.lease_expires_at - read.db_now <= timedelta(seconds=3600)
