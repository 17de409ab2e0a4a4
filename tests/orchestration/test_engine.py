"""The engine: snapshots, idempotent re-delivery, outputs flowing between nodes."""
import pytest

from apps.orchestration import engine
from apps.orchestration.models import PipelineDefinition, PipelineRun, StageExecution
from tests.support import make_run

pytestmark = pytest.mark.django_db

NODES = [
    {"id": "metrics", "type": "context", "config": {"include": ["memory"]}, "next": "shape"},
    {"id": "shape", "type": "transform", "config": {"mapping": {"mem": "metrics.checks.memory.value", "who": "payload.server"}}},
]


def test_each_node_sees_earlier_outputs_and_the_payload():
    run = engine.run_execute(run_id=make_run(NODES, payload={"server": "web-01"}).pk)
    shape = run.result["node_results"]["shape"]["output"]
    assert shape["who"] == "web-01"
    assert shape["mem"] == run.result["node_results"]["metrics"]["output"]["checks"]["memory"]["value"]
    assert run.status == "completed" and run.current_node == "" and run.finished_at is not None


def test_run_executes_its_snapshot_not_the_edited_definition():
    run = make_run(NODES, payload={"server": "web-01"})
    PipelineDefinition.objects.filter(name="p").update(
        config={"version": "1.0", "nodes": [{"id": "other", "type": "context"}]}
    )
    run = engine.run_execute(run_id=run.pk)
    assert run.result["executed_nodes"] == ["metrics", "shape"]


def test_redelivered_run_does_not_re_execute_succeeded_nodes():
    run = make_run(NODES, payload={"server": "web-01"})
    # A first delivery finished `metrics` and then its worker died.
    PipelineRun.objects.filter(pk=run.pk).update(status="running")
    StageExecution.objects.create(
        run=run, node_id="metrics", node_type="context", status="succeeded",
        output={"checks": {"memory": {"name": "memory", "value": 12.5}}},
    )
    run = engine.run_execute(run_id=run.pk)
    assert run.status == "completed"
    assert StageExecution.objects.filter(run=run, node_id="metrics").count() == 1
    assert run.result["node_results"]["metrics"]["reused"] is True
    assert run.result["node_results"]["shape"]["output"]["mem"] == 12.5


def test_finished_run_is_never_run_again():
    run = engine.run_execute(run_id=make_run(NODES, payload={"server": "web-01"}).pk)
    stages = StageExecution.objects.count()
    again = engine.run_execute(run_id=run.pk)
    assert again.status == "completed" and StageExecution.objects.count() == stages


def test_missing_run_returns_none():
    assert engine.run_execute(run_id=999999) is None


def test_node_results_keep_execution_order_in_the_record():
    run = engine.run_execute(run_id=make_run(NODES, payload={"server": "web-01"}).pk)
    run.refresh_from_db()
    assert run.result["executed_nodes"] == ["metrics", "shape"]


def test_node_past_its_time_limit_fails_with_a_timeout():
    nodes = [{"id": "slow", "type": "context", "config": {"include": ["cpu"], "options": {"cpu": {"interval": 3}}}}]
    run = engine.run_execute(run_id=make_run(nodes, name="slow", defaults={"timeout_seconds": 0.3}).pk)
    assert run.status == "failed"
    assert run.error == "Node 'slow' failed: timed out after 0.3s"
    assert run.result["node_results"]["slow"]["duration_ms"] < 3000


def test_run_time_limit_stops_the_node_fails_the_run_once_and_skips_the_rest(settings):
    settings.RUN_TIME_LIMIT_SECONDS = 1
    slow = {"id": "slow", "type": "context", "config": {"include": ["cpu"], "options": {"cpu": {"interval": 5}}},
            "next": "after"}
    nodes = [slow, {"id": "after", "type": "context", "config": {"include": ["memory"]}}]
    run = engine.run_execute(run_id=make_run(nodes, name="long", defaults={"max_retries": 2}).pk)
    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error == "Run stopped: it ran past the run time limit of 1s"
    assert run.result["executed_nodes"] == ["slow"] and run.result["skipped_nodes"] == ["after"]
    assert run.result["node_results"]["slow"]["duration_ms"] < 5000
    # The node is not retried: the run, not the node, is out of time.
    assert list(StageExecution.objects.filter(run=run).values_list("node_id", "attempt", "status")) == [
        ("slow", 1, "failed")
    ]


def test_run_found_past_its_time_limit_at_a_takeover_is_ended_not_executed(settings):
    from datetime import timedelta

    from django.db.models.functions import Now

    run = make_run(NODES, payload={"server": "web-01"})
    # Its worker was killed by the hard time limit long after the run started.
    PipelineRun.objects.filter(pk=run.pk).update(status="running", started_at=Now() - timedelta(hours=2))
    run = engine.run_execute(run_id=run.pk)
    assert run.status == "failed" and run.error.startswith("Run stopped: it ran past the run time limit")
    assert not StageExecution.objects.filter(run=run).exists()
    assert run.result["skipped_nodes"] == ["metrics", "shape"]
