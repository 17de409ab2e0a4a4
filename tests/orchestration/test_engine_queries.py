"""What executing a run costs the database: queries, writes and commits per
run, with the fenced write's guarantees around a node boundary."""
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models.functions import Now
from django.test.utils import CaptureQueriesContext

from apps.orchestration import engine, inputs, launch, launchrequest, lease
from apps.orchestration.models import PipelineDefinition, PipelineRun, StageExecution
from tests.support import make_run

# Real commits, as on a worker: inside a test's transaction, commits would be savepoints.
pytestmark = pytest.mark.django_db(transaction=True)

THREE_TRANSFORMS = [
    {"id": "a", "type": "transform", "config": {"mapping": {"x": "payload.x"}}, "next": "b"},
    {"id": "b", "type": "transform", "config": {"mapping": {"y": "a.x"}}, "next": "c"},
    {"id": "c", "type": "transform", "config": {"mapping": {"z": "b.y"}}},
]
QUERY_CEILING = 12


def writes(sql: str) -> bool:
    head = sql.lstrip().upper()
    return head.startswith(("INSERT", "UPDATE", "DELETE")) or (
        head.startswith("WITH") and ("INSERT INTO" in head or "UPDATE " in head)
    )


def test_a_three_node_run_takes_at_most_12_queries_and_reads_nothing_back():
    run = make_run(THREE_TRANSFORMS, name="three", payload={"x": 7})
    with CaptureQueriesContext(connection) as captured:
        done = engine.run_execute(run_id=run.pk)
    sql = [q["sql"] for q in captured.captured_queries]
    shown = "\n".join(s[:160] for s in sql)
    assert done.status == "completed" and done.result["node_results"]["c"]["output"] == {"z": 7}
    assert len(sql) <= QUERY_CEILING, shown
    # The claim's UPDATE returns the run's row: nothing is read on its own.
    assert not any(s.lstrip().upper().startswith("SELECT") for s in sql), shown
    assert sql[0].lstrip().upper().startswith("UPDATE") and "RETURNING" in sql[0].upper(), shown
    stages = list(StageExecution.objects.filter(run=run).order_by("pk").values_list("node_id", "attempt", "status"))
    assert stages == [("a", 1, "succeeded"), ("b", 1, "succeeded"), ("c", 1, "succeeded")]


def test_a_three_node_run_commits_once_per_node_plus_the_claim_and_the_end_on_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("one statement per node boundary needs PostgreSQL (SQLite has no UPDATE inside WITH)")
    run = make_run(THREE_TRANSFORMS, name="three", payload={"x": 7})
    with CaptureQueriesContext(connection) as captured:
        engine.run_execute(run_id=run.pk)
    sql = [q["sql"] for q in captured.captured_queries]
    shown = "\n".join(s[:160] for s in sql)
    # Every progress write is one autocommit statement: the claim (which stands for the first
    # node's start) and one per later node (opening it and recording the one before). The end
    # is one transaction: the run's fenced UPDATE and its counts in the metrics rollup.
    marks = [i for i, s in enumerate(sql) if s.strip().upper() in ("BEGIN", "COMMIT")]
    assert len(marks) == 2 and sql[marks[0]].strip().upper() == "BEGIN" and marks[1] == len(sql) - 1, shown
    progress, end = sql[: marks[0]], sql[marks[0] + 1 : marks[1]]
    assert sum(writes(s) for s in progress) == 1 + (len(THREE_TRANSFORMS) - 1), shown
    assert "'completed'" in end[0] and all("tally" in s for s in end[1:]), shown
    # Only the end waits for the disk flush (a claim lost in a crash leaves the run queued for the sweep).
    assert all("set_config('synchronous_commit', 'off', true)" in s for s in progress if writes(s)), shown
    assert not any("synchronous_commit" in s for s in end), shown


def test_a_progress_write_renews_the_lease():
    run = make_run(THREE_TRANSFORMS, name="three", payload={"x": 7})
    claim = lease.run_claim(run_id=run.pk, token="host-a:1:a")
    PipelineRun.objects.filter(pk=run.pk).update(lease_expires_at=Now() + timedelta(seconds=1))
    stage = StageExecution(run_id=run.pk, node_id="a", node_type="transform")
    claim.lease.write(run_fields={"current_node": "a"}, stage=stage, before_node=True)
    row = PipelineRun.objects.annotate(db_now=Now()).get(pk=run.pk)
    assert (row.lease_expires_at - row.db_now).total_seconds() > 20


def test_a_takeover_after_a_node_boundary_keeps_the_ended_node_and_interrupts_the_opened_one():
    run = make_run(THREE_TRANSFORMS, name="three", payload={"x": 7})
    old = lease.run_claim(run_id=run.pk, token="host-a:1:a").lease
    first = StageExecution(run_id=run.pk, node_id="a", node_type="transform")
    old.write(run_fields={}, stage=first, before_node=True)
    first.status, first.output, first.finished_at = "succeeded", {"x": 7}, old.clock.now()
    second = StageExecution(run_id=run.pk, node_id="b", node_type="transform")
    # One write records a's outcome, opens b and makes b the run's current node.
    old.write(run_fields={"current_node": "b"}, stages=[first, second], before_node=True)
    assert PipelineRun.objects.get(pk=run.pk).current_node == "b"
    assert StageExecution.objects.filter(run=run).count() == 2  # a's row was updated, not added
    PipelineRun.objects.filter(pk=run.pk).update(lease_expires_at=Now() - timedelta(seconds=1))
    done = engine.run_execute(run_id=run.pk)
    assert done.status == "completed", done.error
    stages = list(StageExecution.objects.filter(run=run).order_by("pk").values_list("node_id", "attempt", "status"))
    assert stages == [("a", 1, "succeeded"), ("b", 1, "failed"), ("b", 2, "succeeded"), ("c", 1, "succeeded")]
    assert StageExecution.objects.get(run=run, node_id="b", attempt=1).errors == [
        "interrupted: the process executing it (host-a:1:a) was lost"
    ]
    assert done.result["node_results"]["a"]["reused"] is True
    # The old holder's next write is refused and changes nothing.
    def record():
        return PipelineRun.objects.values().get(pk=run.pk), list(StageExecution.objects.filter(run=run).values())

    before = record()
    third = StageExecution(run_id=run.pk, node_id="c", node_type="transform", attempt=2)
    with pytest.raises(lease.LeaseLost):
        old.write(run_fields={"current_node": "c"}, stages=[second, third], before_node=True)
    assert record() == before


def test_a_takeover_during_the_first_node_records_it_as_interrupted_from_the_claim():
    run = make_run(THREE_TRANSFORMS, name="three", payload={"x": 7})
    # A holder lost during its first node has written nothing since its claim.
    lease.run_claim(run_id=run.pk, token="host-a:1:a")
    claimed = PipelineRun.objects.get(pk=run.pk)
    assert claimed.current_node == "a" and not StageExecution.objects.filter(run=run).exists()
    PipelineRun.objects.filter(pk=run.pk).update(lease_expires_at=Now() - timedelta(seconds=1))
    done = engine.run_execute(run_id=run.pk)
    assert done.status == "completed", done.error
    stages = list(StageExecution.objects.filter(run=run).order_by("pk").values_list("node_id", "attempt", "status"))
    assert stages == [("a", 1, "failed"), ("a", 2, "succeeded"), ("b", 1, "succeeded"), ("c", 1, "succeeded")]
    interrupted = StageExecution.objects.get(run=run, node_id="a", attempt=1)
    assert interrupted.errors == ["interrupted: the process executing it (host-a:1:a) was lost"]
    assert interrupted.node_type == "transform" and interrupted.started_at == claimed.started_at
    assert interrupted.finished_at is not None
    assert done.result["node_results"]["a"]["attempts"] == 2


def test_a_takeover_before_a_retrys_first_executed_node_records_no_reused_node_as_interrupted():
    PipelineDefinition.objects.create(name="three", config={"version": "1.0", "nodes": THREE_TRANSFORMS})
    reused = {"a": {"type": "transform", "status": "succeeded", "required": True, "attempts": 1,
                    "output": {"x": 7}, "duration_ms": 0.1}}
    run = launch.pipeline_run_create(request=launchrequest.LaunchRequest(resolved=inputs.definition_resolve(name="three"), payload={"x": 7}, reused_results=reused,))
    # Lost right after its claim: the current node is the reused one, executed by the original run.
    lease.run_claim(run_id=run.pk, token="host-a:1:a")
    PipelineRun.objects.filter(pk=run.pk).update(lease_expires_at=Now() - timedelta(seconds=1))
    done = engine.run_execute(run_id=run.pk)
    assert done.status == "completed", done.error
    stages = list(StageExecution.objects.filter(run=run).order_by("pk").values_list("node_id", "attempt", "status"))
    assert stages == [("b", 1, "succeeded"), ("c", 1, "succeeded")]
    assert done.result["node_results"]["a"]["reused"] is True


def test_a_cancel_request_at_a_node_boundary_records_the_ended_node_and_starts_no_other():
    run = make_run(THREE_TRANSFORMS, name="three", payload={"x": 7})
    claim = lease.run_claim(run_id=run.pk, token="host-a:1:a")
    first = StageExecution(run_id=run.pk, node_id="a", node_type="transform")
    claim.lease.write(run_fields={}, stage=first, before_node=True)
    PipelineRun.objects.filter(pk=run.pk).update(cancel_requested_at=Now())
    first.status, first.finished_at = "succeeded", claim.lease.clock.now()
    with pytest.raises(lease.CancelRequested):
        claim.lease.write(run_fields={"current_node": "b"}, stages=[first, StageExecution(
            run_id=run.pk, node_id="b", node_type="transform")], before_node=True)
    assert list(StageExecution.objects.filter(run=run).values_list("node_id", "status")) == [("a", "running")]
    claim.lease.write(run_fields={"status": "cancelled", "finished_at": Now(), "current_node": ""},
                      stage=first, durable=True)
    assert list(StageExecution.objects.filter(run=run).values_list("node_id", "status")) == [("a", "succeeded")]


def test_launching_a_run_is_one_insert_that_stores_every_value():
    PipelineDefinition.objects.create(name="three", config={"version": "1.0", "nodes": THREE_TRANSFORMS})
    resolved = inputs.definition_resolve(name="three")
    with CaptureQueriesContext(connection) as captured:
        run = launch.pipeline_run_create(request=launchrequest.LaunchRequest(resolved=resolved, payload={"x": 7, "text": "é ✓"}, source="bench", environment="staging",
            trace_id="trace-1", target_host="alpha",))
    sql = [q["sql"] for q in captured.captured_queries]
    assert len(sql) == 1 and sql[0].lstrip().upper().startswith("INSERT"), sql
    stored = PipelineRun.objects.annotate(db_now=Now()).get(pk=run.pk)
    assert (stored.status, stored.trace_id, stored.source, stored.environment, stored.target_host) == (
        "queued", "trace-1", "bench", "staging", "alpha"
    )
    assert stored.payload == {"x": 7, "text": "é ✓"} and stored.config_snapshot == resolved.config
    assert stored.definition_id == resolved.definition.pk and stored.origin == "three"
    assert stored.created_at == run.created_at and stored.result == {} and stored.reused_results == {}
    # The database's time, for the recovery sweep's grace period.
    assert stored.published_at is not None and abs((stored.db_now - stored.published_at).total_seconds()) < 60


def test_a_launch_with_a_taken_idempotency_key_inside_a_transaction_leaves_it_usable():
    from django.db import transaction

    PipelineDefinition.objects.create(name="three", config={"version": "1.0", "nodes": THREE_TRANSFORMS})
    resolved = inputs.definition_resolve(name="three")
    first = launch.pipeline_run_create(request=launchrequest.LaunchRequest(resolved=resolved, payload={}, idempotency_key="k-1"))
    with transaction.atomic():
        with pytest.raises(launchrequest.RunExists) as refused:
            launch.pipeline_run_create(request=launchrequest.LaunchRequest(resolved=resolved, payload={}, idempotency_key="k-1"))
        assert refused.value.run.pk == first.pk
        # The enclosing transaction goes on.
        assert PipelineRun.objects.filter(idempotency_key="k-1").count() == 1
