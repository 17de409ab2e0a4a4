"""The metrics' rollup: every way a run ends adds it to RunTally (and its
attempts to NodeTally) exactly once, in the transaction of its end."""
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Sum
from django.db.models.functions import Now

from apps.orchestration import engine, launch, lease, rollup, ticks
from apps.orchestration.models import RUN_BUCKETS, NodeTally, PipelineDefinition, PipelineRun, RunTally
from apps.orchestration.run_actions import pipeline_run_cancel
from apps.orchestration.schedules import schedule_sync
from tests.support import make_run

pytestmark = pytest.mark.django_db(transaction=True)

NODES = [
    {"id": "first", "type": "context", "config": {"include": ["memory"]}, "next": "second"},
    {"id": "second", "type": "transform", "config": {"mapping": {"m": "first.checks.memory.value"}}},
]
# A required node whose mapping names an output no node made: it fails at every attempt.
FAILING = [{"id": "broken", "type": "transform", "config": {"mapping": {"m": "nowhere.value"}}}]


def runs() -> dict:
    """RunTally counts summed over shards: {(definition, trigger, status): (count, timed)}."""
    rows = RunTally.objects.values("definition", "trigger", "status").annotate(n=Sum("count"), t=Sum("timed"))
    return {(r["definition"], r["trigger"], r["status"]): (r["n"], r["t"]) for r in rows}


def nodes() -> dict:
    """NodeTally counts summed over shards: {(node type, status): (count, timed)}."""
    rows = NodeTally.objects.values("node_type", "status").annotate(n=Sum("count"), t=Sum("timed"))
    return {(r["node_type"], r["status"]): (r["n"], r["t"]) for r in rows}


def expire(run_id: int) -> None:
    PipelineRun.objects.filter(pk=run_id).update(lease_expires_at=Now() - timedelta(seconds=1))


def test_a_completed_run_is_counted_once_with_its_duration_and_nodes():
    run = engine.run_execute(run_id=make_run(NODES).pk)
    assert run.status == "completed"
    assert runs() == {("p", "cli", "completed"): (1, 1)}
    assert nodes() == {("context", "succeeded"): (1, 1), ("transform", "succeeded"): (1, 1)}
    row = RunTally.objects.get()
    assert row.micros == round(run.duration_ms * 1000)  # whole microseconds: sums are exact
    expected = [1 if run.duration_ms <= bound * 1000 else 0 for bound in RUN_BUCKETS]
    assert [getattr(row, f"le_{index}") for index in range(len(RUN_BUCKETS))] == expected
    # Delivered again: a finished run is left alone, and counted no more.
    engine.run_execute(run_id=run.pk)
    assert runs() == {("p", "cli", "completed"): (1, 1)}


def test_a_failed_run_counts_every_attempt_of_its_node():
    run = engine.run_execute(run_id=make_run(FAILING, defaults={"max_retries": 2}).pk)
    assert run.status == "failed"
    assert runs() == {("p", "cli", "failed"): (1, 1)}
    assert nodes() == {("transform", "failed"): (3, 3)}


def test_a_cancel_request_seen_by_the_engine_is_counted_once():
    run = make_run(NODES)
    PipelineRun.objects.filter(pk=run.pk).update(status="running", started_at=Now(), cancel_requested_at=Now())
    assert engine.run_execute(run_id=run.pk).status == "cancelled"
    assert runs() == {("p", "cli", "cancelled"): (1, 1)}
    assert nodes() == {}


def test_a_takeover_counts_the_run_once_with_the_interrupted_attempt():
    run = make_run(NODES)
    old = lease.run_claim(run_id=run.pk, token="host-a:1:a")
    expire(run.pk)
    assert engine.run_execute(run_id=run.pk).status == "completed"
    # The first node was being executed by the lost holder: one interrupted attempt (no duration), one more.
    assert runs() == {("p", "cli", "completed"): (1, 1)}
    assert nodes() == {("context", "failed"): (1, 0), ("context", "succeeded"): (1, 1),
                       ("transform", "succeeded"): (1, 1)}
    # The lost holder's end is refused and counts nothing.
    with pytest.raises(lease.LeaseLost):
        old.lease.write(run_fields={"status": "failed", "finished_at": Now()}, durable=True)
    assert runs() == {("p", "cli", "completed"): (1, 1)}


def test_cancelling_a_queued_run_counts_it_once_without_a_duration():
    run = make_run(NODES)
    pipeline_run_cancel(run_id=run.pk)
    pipeline_run_cancel(run_id=run.pk)  # asked twice: already cancelled
    assert engine.run_execute(run_id=run.pk).status == "cancelled"  # its message arrives later
    assert runs() == {("p", "cli", "cancelled"): (1, 0)}
    assert RunTally.objects.get().micros == 0


def test_cancelling_an_abandoned_run_counts_it_and_its_interrupted_node():
    run = make_run(NODES)
    lease.run_claim(run_id=run.pk, token="host-a:1:a")
    expire(run.pk)
    assert pipeline_run_cancel(run_id=run.pk).status == "cancelled"
    assert runs() == {("p", "cli", "cancelled"): (1, 0)}  # its end has no duration
    assert nodes() == {("context", "failed"): (1, 0)}
    assert not lease.run_end_abandoned(run_id=run.pk, fields={"status": "failed"}, reason="again")
    assert runs() == {("p", "cli", "cancelled"): (1, 0)}


def test_a_run_the_broker_refused_is_counted_once_as_failed():
    run = make_run(NODES)
    launch.run_mark_failed(run_id=run.pk, error="the broker did not take it")
    launch.run_mark_failed(run_id=run.pk, error="the broker did not take it")
    assert runs() == {("p", "cli", "failed"): (1, 0)}


def test_a_tick_that_cannot_start_its_run_is_counted_once_however_often_delivered():
    tick = PipelineDefinition.objects.create(
        name="tick", config={"version": "1.0", "nodes": NODES, "schedule": {"every": 60}}
    )
    schedule_sync(definition=tick)
    tick.delete()
    ticks.pipeline_run_schedule(definition_name="tick", due="t1")
    ticks.pipeline_run_schedule(definition_name="tick", due="t1")
    assert runs() == {("tick", "schedule", "failed"): (1, 0)}


@pytest.mark.parametrize(("origin", "label"), [
    ("/secret/dir/checks.json", "config:checks.json"),
    ("checks.json", "config:checks.json"),
    ('/tmp/we"ird\nname.json', 'config:we"ird\nname.json'),
])
def test_a_config_file_run_is_labelled_by_its_file_name_only(origin, label):
    run = make_run(NODES, origin=origin, origin_kind="config", definition_name="", definition=None)
    pipeline_run_cancel(run_id=run.pk)
    assert runs() == {(label, "cli", "cancelled"): (1, 0)}


def test_runs_ended_at_once_by_many_threads_are_each_counted_once():
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL (SQLite serialises every write)")
    ids = [make_run(NODES).pk for _ in range(120)]
    errors = []

    def cancel(chunk):
        try:
            for run_id in chunk:
                pipeline_run_cancel(run_id=run_id)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=cancel, args=(ids[index::8],)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and not any(thread.is_alive() for thread in threads)
    assert runs() == {("p", "cli", "cancelled"): (120, 0)}
    # Spread over rows: the writers did not all queue on one.
    assert 1 < RunTally.objects.count() <= rollup.TALLY_SHARDS


def _shard_copies(model, shards: range) -> None:
    """Copy every row of ``model`` into ``shards`` (as other writers would have made them)."""
    fields = [f.name for f in model._meta.concrete_fields if f.name not in ("id", "shard")]
    for row in list(model.objects.values(*fields)):
        model.objects.bulk_create([model(shard=shard, **row) for shard in shards], ignore_conflicts=True)


def test_folding_keeps_every_sum_and_leaves_one_row_per_series():
    for _ in range(2):
        assert engine.run_execute(run_id=make_run(NODES).pk).status == "completed"
    assert engine.run_execute(run_id=make_run(FAILING, name="f", defaults={"max_retries": 1}).pk).status == "failed"
    pipeline_run_cancel(run_id=make_run(NODES).pk)
    for model in (RunTally, NodeTally):
        model.objects.exclude(shard=0).update(shard=0)  # wherever this thread wrote, then copies beside it
        _shard_copies(model, range(1, rollup.TALLY_SHARDS))
    counters = ["count", "timed", "micros", *(f"le_{index}" for index in range(len(RUN_BUCKETS)))]

    def totals(model, labels):
        rows = model.objects.values(*labels).annotate(**{name: Sum(name) for name in counters}).order_by(*labels)
        return [dict(row) for row in rows]

    before = totals(RunTally, ["definition", "trigger", "status"]), totals(NodeTally, ["node_type", "status"])
    series = RunTally.objects.filter(shard=0).count() + NodeTally.objects.filter(shard=0).count()
    assert rollup.rollup_fold() == series * (rollup.TALLY_SHARDS - 1)
    assert (totals(RunTally, ["definition", "trigger", "status"]), totals(NodeTally, ["node_type", "status"])) == before
    assert not RunTally.objects.exclude(shard=0).exists() and not NodeTally.objects.exclude(shard=0).exists()
    assert rollup.rollup_fold() == 0  # nothing left to fold
    # Runs ending after a fold add to the folded rows' sums.
    assert engine.run_execute(run_id=make_run(NODES).pk).status == "completed"
    rollup.rollup_fold()
    assert runs()[("p", "cli", "completed")] == (2 * rollup.TALLY_SHARDS + 1,) * 2


def test_runs_ended_while_the_rollup_is_folded_are_each_counted_once():
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL (SQLite serialises every write)")
    ids = [make_run(NODES).pk for _ in range(160)]
    errors = []
    done = threading.Event()

    def cancel(chunk):
        try:
            for run_id in chunk:
                pipeline_run_cancel(run_id=run_id)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    def fold():
        try:
            while not done.is_set():
                rollup.rollup_fold()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    folder = threading.Thread(target=fold)
    folder.start()
    threads = [threading.Thread(target=cancel, args=(ids[index::8],)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    done.set()
    folder.join(timeout=60)
    assert not errors and not any(thread.is_alive() for thread in [*threads, folder])
    assert runs() == {("p", "cli", "cancelled"): (160, 0)}
    rollup.rollup_fold()
    assert list(RunTally.objects.values_list("shard", "count")) == [(0, 160)]
