"""/metrics: counters and histograms from the rollup the runs' ends write, queue gauges
from the queued runs alone, for a key with scope metrics."""
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models.functions import Now
from django.test import Client
from django.test.utils import CaptureQueriesContext
from prometheus_client.parser import text_string_to_metric_families

from apps.orchestration import engine
from apps.orchestration.models import PipelineRun
from apps.orchestration.run_actions import pipeline_run_cancel
from tests.support import make_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def metrics_key(db) -> str:
    """An API key with scope metrics, as Prometheus is given (create_api_key's service)."""
    from apps.api.keys import api_key_create

    return api_key_create(name="prometheus", scopes=["metrics"])[1]


@pytest.fixture
def client(metrics_key):
    """A client sending the metrics key as Prometheus's ``authorization: credentials`` does."""
    return Client(headers={"Authorization": f"Bearer {metrics_key}"})


NODES = [
    {"id": "first", "type": "context", "config": {"include": ["memory"]}, "next": "second"},
    {"id": "second", "type": "transform", "config": {"mapping": {"m": "first.checks.memory.value"}}},
]
FAILING = [{"id": "broken", "type": "transform", "config": {"mapping": {"m": "nowhere.value"}}}]


def queued(name: str, *, created_ago: float, **fields) -> PipelineRun:
    """A queued run of ``name`` created ``created_ago`` seconds ago (moved back: it is stamped on insert)."""
    return make_run(NODES, name=name, created_at=Now() - timedelta(seconds=created_ago), **fields)


@pytest.fixture
def runs():
    """Runs ended the ways runs end: executed (completed twice, failed with a retry), cancelled while
    queued (one of a config file), and two still queued."""
    for _ in range(2):
        assert engine.run_execute(run_id=make_run(NODES, name="alpha").pk).status == "completed"
    failing = make_run(FAILING, name="beta", defaults={"max_retries": 1}, trigger="schedule")
    assert engine.run_execute(run_id=failing.pk).status == "failed"
    pipeline_run_cancel(run_id=make_run(NODES, name="alpha").pk)
    config = make_run(NODES, name="gamma", origin="/secret/dir/checks.json", origin_kind="config",
                      definition_name="", definition=None)
    pipeline_run_cancel(run_id=config.pk)
    queued("alpha", created_ago=300)
    queued("beta", created_ago=5)


def scrape(client) -> tuple[dict, str]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    body = response.content.decode()
    return {family.name: family for family in text_string_to_metric_families(body)}, body


def samples(family, suffix=""):
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for sample in family.samples
        if sample.name == family.name + suffix
    }


def test_the_names_and_types_follow_prometheus_conventions(client, runs):
    families, body = scrape(client)
    assert {name: family.type for name, family in families.items()} == {
        "pipeline_runs": "counter",
        "pipeline_run_duration_seconds": "histogram",
        "pipeline_nodes": "counter",
        "pipeline_node_duration_seconds": "histogram",
        "pipeline_runs_queued": "gauge",
        "pipeline_oldest_queued_run_age_seconds": "gauge",
        "pipeline_workers_live": "gauge",
        "pipeline_beat_last_tick_age_seconds": "gauge",
        "pipeline_schedule_lateness_seconds": "gauge",
    }
    # Every family says what it measures; no gauge ends in _total.
    assert all(family.documentation for family in families.values())
    assert not any(name.endswith("_total") for name, family in families.items() if family.type == "gauge")
    assert "# TYPE pipeline_runs_total counter" in body and "# TYPE pipeline_nodes_total counter" in body
    assert {sample.name for sample in families["pipeline_runs"].samples} == {"pipeline_runs_total"}


def test_ended_runs_are_counted_by_definition_trigger_and_status(client, runs):
    families, body = scrape(client)
    assert samples(families["pipeline_runs"], "_total") == {
        (("definition", "alpha"), ("status", "completed"), ("trigger", "cli")): 2,
        (("definition", "alpha"), ("status", "cancelled"), ("trigger", "cli")): 1,
        (("definition", "beta"), ("status", "failed"), ("trigger", "schedule")): 1,
        # A config file is labelled by its file name only.
        (("definition", "config:checks.json"), ("status", "cancelled"), ("trigger", "cli")): 1,
    }
    assert "secret" not in body
    assert samples(families["pipeline_nodes"], "_total") == {
        (("status", "succeeded"), ("type", "context")): 2,
        (("status", "succeeded"), ("type", "transform")): 2,
        (("status", "failed"), ("type", "transform")): 2,  # both attempts of beta's node
    }


def test_histograms_hold_the_runs_that_started_and_every_timed_attempt(client, runs):
    families, _ = scrape(client)
    runs_family = families["pipeline_run_duration_seconds"]
    counts = samples(runs_family, "_count")
    # Runs cancelled while queued never started: in the counter, not in the histogram.
    assert counts == {(("definition", "alpha"), ("status", "completed")): 2,
                      (("definition", "beta"), ("status", "failed")): 1}
    stored = sum(run.duration_ms for run in PipelineRun.objects.filter(status="completed")) / 1000
    assert samples(runs_family, "_sum")[(("definition", "alpha"), ("status", "completed"))] == pytest.approx(stored)
    for family in (runs_family, families["pipeline_node_duration_seconds"]):
        buckets = samples(family, "_bucket")
        for labels, count in samples(family, "_count").items():
            series = sorted(
                (float(dict(key)["le"]), value) for key, value in buckets.items()
                if {k: v for k, v in key if k != "le"} == dict(labels)
            )
            assert series[-1] == (float("inf"), count)  # +Inf is the count
            assert [value for _, value in series] == sorted(value for _, value in series)  # cumulative
    assert samples(families["pipeline_node_duration_seconds"], "_count")[(("status", "failed"), ("type", "transform"))] == 2


def test_counters_never_go_down_when_runs_are_pruned(client, runs):
    before, _ = scrape(client)
    old = Now() - timedelta(days=10)
    PipelineRun.objects.filter(status__in=PipelineRun.TERMINAL).update(created_at=old, finished_at=old)
    call_command("prune_runs", "--older-than", "1d", stdout=None)
    assert not PipelineRun.objects.filter(status__in=PipelineRun.TERMINAL).exists()
    after, _ = scrape(client)
    for name in ("pipeline_runs", "pipeline_nodes", "pipeline_run_duration_seconds", "pipeline_node_duration_seconds"):
        assert after[name].samples == before[name].samples


def test_the_definition_label_can_be_left_out(client, runs, settings):
    settings.METRICS_DEFINITION_LABEL = False
    families, body = scrape(client)
    assert samples(families["pipeline_runs"], "_total") == {
        (("status", "completed"), ("trigger", "cli")): 2,
        (("status", "cancelled"), ("trigger", "cli")): 2,
        (("status", "failed"), ("trigger", "schedule")): 1,
    }
    assert samples(families["pipeline_run_duration_seconds"], "_count") == {
        (("status", "completed"),): 2, (("status", "failed"),): 1,
    }
    assert "definition=" not in body


def test_queued_runs_and_the_age_of_the_oldest(client, runs):
    families, _ = scrape(client)
    assert samples(families["pipeline_runs_queued"]) == {(): 2}
    age = samples(families["pipeline_oldest_queued_run_age_seconds"])[()]
    assert 300 <= age < 360


def test_no_run_is_zero_everywhere(client):
    families, _ = scrape(client)
    assert samples(families["pipeline_runs_queued"]) == {(): 0}
    assert samples(families["pipeline_oldest_queued_run_age_seconds"]) == {(): 0}
    assert samples(families["pipeline_runs"], "_total") == {}
    assert samples(families["pipeline_run_duration_seconds"], "_count") == {}
    # No worker, no beat, no tick yet: no queue to count, and no age or lateness to make up.
    for name in ("pipeline_workers_live", "pipeline_beat_last_tick_age_seconds", "pipeline_schedule_lateness_seconds"):
        assert families[name].samples == []


def test_live_workers_are_counted_per_queue_until_they_stop(client):
    from apps.orchestration.presence import worker_presence_end, worker_presence_renew

    worker_presence_renew(worker="celery@a", queues=["runs", "host.a"], interval=10)
    worker_presence_renew(worker="celery@b", queues=["runs", "host.b"], interval=10)
    families, _ = scrape(client)
    assert samples(families["pipeline_workers_live"]) == {
        (("queue", "host.a"),): 1, (("queue", "host.b"),): 1, (("queue", "runs"),): 2,
    }
    # b stops (a warm shutdown); a no longer consumes its host queue: they show as 0, not absent.
    worker_presence_end(worker="celery@b")
    worker_presence_renew(worker="celery@a", queues=["runs"], interval=10)
    families, _ = scrape(client)
    assert samples(families["pipeline_workers_live"]) == {
        (("queue", "host.a"),): 0, (("queue", "host.b"),): 0, (("queue", "runs"),): 1,
    }


def test_a_worker_that_stops_renewing_stops_counting(client):
    from apps.orchestration.models import WorkerQueue
    from apps.orchestration.presence import worker_presence_renew

    worker_presence_renew(worker="celery@gone", queues=["runs"], interval=10)
    # Its renewals stopped (killed): the row as it is once the last one has expired.
    WorkerQueue.objects.update(expires_at=Now() - timedelta(seconds=1))
    families, _ = scrape(client)
    assert samples(families["pipeline_workers_live"]) == {(("queue", "runs"),): 0}
    # A worker gone for more than a day is forgotten at the next renewal of any worker.
    WorkerQueue.objects.update(expires_at=Now() - timedelta(days=2))
    worker_presence_renew(worker="celery@new", queues=["runs"], interval=10)
    assert list(WorkerQueue.objects.values_list("worker", flat=True)) == ["celery@new"]


def test_beats_last_tick_age_is_read_from_its_lease(client):
    from apps.orchestration.beatstate import holder_name, lease_take
    from apps.orchestration.models import BeatLease

    assert lease_take(holder=holder_name())
    BeatLease.objects.update(renewed_at=Now() - timedelta(seconds=90))
    families, _ = scrape(client)
    age = samples(families["pipeline_beat_last_tick_age_seconds"])[()]
    assert 90 <= age < 150


def test_the_latest_lateness_is_of_the_most_recent_fire(client):
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from apps.orchestration.models import ScheduleState

    every = IntervalSchedule.objects.create(every=60, period=IntervalSchedule.SECONDS)
    for name in ("early", "late", "older"):
        task = PeriodicTask.objects.create(name=name, task="orchestration.run_scheduled", interval=every)
        ScheduleState.objects.create(task=task, definition_name=name, schedule="every 60 seconds",
                                     next_due_at=Now())
    # One fire stamps every tick it fired with its time; the latest of them sets the gauge.
    ScheduleState.objects.filter(definition_name="early").update(
        last_fired_at=Now() - timedelta(seconds=10), last_due_at=Now() - timedelta(seconds=12))
    fired = ScheduleState.objects.get(definition_name="early").last_fired_at
    ScheduleState.objects.filter(definition_name="late").update(
        last_fired_at=fired, last_due_at=fired - timedelta(seconds=3.5))
    # An older fire, later still, is not the most recent.
    ScheduleState.objects.filter(definition_name="older").update(
        last_fired_at=fired - timedelta(seconds=60), last_due_at=fired - timedelta(seconds=120))
    families, _ = scrape(client)
    assert samples(families["pipeline_schedule_lateness_seconds"]) == {(): pytest.approx(3.5)}


def test_the_latest_lateness_reads_an_index():
    from django.db.models import Max, Min

    from apps.orchestration.metrics import latest_fire

    latest = latest_fire().values("last_fired_at").annotate(fired=Max("last_fired_at"), due=Min("last_due_at"))
    sql, params = latest.order_by().values("fired", "due").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(("EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN ") + sql, params)
        plan = " ".join(str(row) for row in cursor.fetchall())
    assert "schedulestate_last_fired" in plan, plan


def test_a_scrape_reads_no_history(client, runs):
    with CaptureQueriesContext(connection) as queries:
        scrape(client)
    run_table, stage_table = PipelineRun._meta.db_table, "orchestration_stageexecution"
    sql = [query["sql"] for query in queries.captured_queries]
    assert not any(stage_table in text for text in sql)
    # One read of the runs: the queue gauges', restricted to the queued ones.
    [queue] = [text for text in sql if run_table in text]
    assert "queued" in queue


def test_the_queue_gauges_read_only_the_index_of_queued_runs(runs):
    queryset = PipelineRun.objects.filter(status=PipelineRun.Status.QUEUED)
    with connection.cursor() as cursor:
        sql, params = queryset.order_by().values("created_at").query.sql_with_params()
        count_sql = f"SELECT COUNT(*), MIN(created_at) FROM ({sql}) AS queued"
        cursor.execute(("EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN ") + count_sql, params)
        plan = " ".join(str(row) for row in cursor.fetchall())
    assert "pipelinerun_status_created" in plan, plan


def test_metrics_answer_get_only(client):
    assert client.post("/metrics").status_code == 405


def test_metrics_need_a_key(db):
    response = Client().get("/metrics")
    assert response.status_code == 401
    assert response.json() == {"error": "An API key is required: send Authorization: Bearer <key>"}
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    wrong = Client(headers={"Authorization": "Bearer pl_0123abcd_" + "A" * 43}).get("/metrics")
    assert wrong.status_code == 401 and wrong.json() == {"error": "The API key is not valid (unknown or revoked)"}
    assert "pipeline_runs" not in wrong.content.decode()


def test_metrics_need_the_metrics_scope(db):
    from apps.api.keys import api_key_create

    _row, key = api_key_create(name="reader", scopes=["runs:read", "alerts"])
    response = Client(headers={"Authorization": f"Bearer {key}"}).get("/metrics")
    assert response.status_code == 403
    assert response.json() == {"error": "This API key does not have the scope 'metrics'"}


def test_metrics_public_needs_no_key(db, settings, runs):
    settings.METRICS_PUBLIC = True
    families, _ = scrape(Client())
    assert samples(families["pipeline_runs_queued"]) == {(): 2}


def test_the_exposition_is_byte_for_byte_what_prometheus_client_writes(runs, settings):
    from prometheus_client import CollectorRegistry, generate_latest

    from apps.orchestration.metrics import metrics_families, metrics_read, metrics_text

    make_run(NODES, name="delta", origin='/tmp/we"ird\\\nna\\me.json', origin_kind="config", definition_name="",
             definition=None)
    pipeline_run_cancel(run_id=PipelineRun.objects.get(origin_kind="config", status="queued").pk)
    from apps.orchestration.beatstate import holder_name, lease_take
    from apps.orchestration.presence import worker_presence_renew

    lease_take(holder=holder_name())
    worker_presence_renew(worker="celery@w", queues=["runs", 'host.we"ird'], interval=10)
    reading = metrics_read()
    families = metrics_families(reading)

    class Fixed:
        def collect(self):
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    body = metrics_text(reading)
    assert body == generate_latest(registry)
    # Backslash, newline and quote escaped: the value stays on its line.
    assert b'definition="config:we\\"ird\\\\\\nna\\\\me.json"' in body


def test_a_run_cancelled_while_running_is_counted_but_not_timed(client):
    run = make_run(NODES, name="alpha")
    PipelineRun.objects.filter(pk=run.pk).update(status="running", started_at=Now(), cancel_requested_at=Now())
    assert engine.run_execute(run_id=run.pk).status == "cancelled"
    assert PipelineRun.objects.get(pk=run.pk).duration_ms is not None
    families, _ = scrape(client)
    assert samples(families["pipeline_runs"], "_total") == {
        (("definition", "alpha"), ("status", "cancelled"), ("trigger", "cli")): 1,
    }
    assert samples(families["pipeline_run_duration_seconds"], "_count") == {}


def test_a_scrape_reads_the_same_before_and_after_the_rollup_is_folded(client, runs):
    from apps.orchestration.rollup import rollup_fold

    _, before = scrape(client)
    rollup_fold()
    _, after = scrape(client)
    age = "pipeline_oldest_queued_run_age_seconds "
    assert [line for line in before.splitlines() if not line.startswith(age)] == [
        line for line in after.splitlines() if not line.startswith(age)
    ]
