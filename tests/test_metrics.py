"""/metrics: run metrics computed from the database at scrape time, for a key with scope metrics."""
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from apps.orchestration.models import PipelineRun, StageExecution
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

def recorded_run(origin, status, *, kind="definition", trigger="cli", duration_ms=None, finished_ago=0, created_ago=0):
    """A run as the launcher stores it (tests.support.make_run), recorded as from ``origin``, with
    ``status``, finished ``finished_ago`` and created ``created_ago`` seconds ago."""
    now = timezone.now()
    return make_run(
        definition=None, definition_name="", origin=origin, origin_kind=kind, trigger=trigger, status=status,
        duration_ms=duration_ms,
        finished_at=now - timedelta(seconds=finished_ago) if status in PipelineRun.TERMINAL else None,
        created_at=now - timedelta(seconds=created_ago),  # stamped on insert: moved back to give the run an age
    )


def stage(run, node_type, duration_ms, status="succeeded", attempt=1):
    StageExecution.objects.create(
        run=run, node_id=f"{node_type}-{attempt}", node_type=node_type, status=status, attempt=attempt,
        duration_ms=duration_ms, finished_at=timezone.now(),
    )


@pytest.fixture
def runs():
    quick = recorded_run("alpha", "completed", duration_ms=400)
    stage(quick, "context", 20)
    stage(quick, "notify", 1200)
    recorded_run("alpha", "completed", duration_ms=3000)
    late = recorded_run("alpha", "failed", trigger="schedule", duration_ms=70_000)
    stage(late, "transform", 300, status="failed")
    stage(late, "transform", 300, status="failed", attempt=2)
    # Outside the histograms' window (RUN_RETENTION_DAYS, 30 by default), still a stored run.
    recorded_run("alpha", "completed", duration_ms=1000, finished_ago=40 * 86400, created_ago=40 * 86400)
    recorded_run("/secret/dir/checks.json", "failed", kind="config", duration_ms=200)
    recorded_run("/other/checks.json", "failed", kind="config", duration_ms=100)
    recorded_run('/tmp/we"ird\nname.json', "cancelled", kind="config")
    recorded_run("builtin", "queued", kind="builtin", created_ago=300)
    recorded_run("alpha", "queued", created_ago=5)


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


def test_runs_are_counted_by_definition_trigger_and_status(client, runs):
    families, body = scrape(client)
    assert samples(families["pipeline_runs"]) == {
        (("definition", "alpha"), ("status", "completed"), ("trigger", "cli")): 3,
        (("definition", "alpha"), ("status", "failed"), ("trigger", "schedule")): 1,
        (("definition", "alpha"), ("status", "queued"), ("trigger", "cli")): 1,
        (("definition", "builtin"), ("status", "queued"), ("trigger", "cli")): 1,
        # Config files are labelled by file name: two files of one name count together.
        (("definition", "config:checks.json"), ("status", "failed"), ("trigger", "cli")): 2,
        (("definition", 'config:we"ird\nname.json'), ("status", "cancelled"), ("trigger", "cli")): 1,
    }
    assert "secret" not in body and "/other" not in body
    # The library escaped the label value: the line stays one line.
    assert 'definition="config:we\\"ird\\nname.json"' in body


def test_queued_runs_and_the_age_of_the_oldest(client, runs):
    families, _ = scrape(client)
    assert samples(families["pipeline_runs_queued"]) == {(): 2}
    age = samples(families["pipeline_oldest_queued_run_age_seconds"])[()]
    assert 300 <= age < 360


def test_no_queued_run_is_age_zero(client):
    families, _ = scrape(client)
    assert samples(families["pipeline_runs_queued"]) == {(): 0}
    assert samples(families["pipeline_oldest_queued_run_age_seconds"]) == {(): 0}
    assert samples(families["pipeline_runs"]) == {}


def test_run_duration_histogram_counts_recent_finished_runs(client, runs):
    family = scrape(client)[0]["pipeline_run_duration_seconds"]
    buckets = samples(family, "_bucket")

    def series(definition, status):
        return {
            dict(labels)["le"]: value for labels, value in buckets.items()
            if dict(labels)["definition"] == definition and dict(labels)["status"] == status
        }

    # The run finished 40 days ago is outside the window.
    assert series("alpha", "completed") == {
        "0.5": 1, "1.0": 1, "2.5": 1, "5.0": 2, "10.0": 2, "30.0": 2, "60.0": 2, "120.0": 2, "300.0": 2,
        "600.0": 2, "1800.0": 2, "3600.0": 2, "+Inf": 2,
    }
    assert series("alpha", "failed")["60.0"] == 0 and series("alpha", "failed")["120.0"] == 1
    assert series("config:checks.json", "failed")["0.5"] == 2
    counts, sums = samples(family, "_count"), samples(family, "_sum")
    assert counts[(("definition", "alpha"), ("status", "completed"))] == 2
    assert sums[(("definition", "alpha"), ("status", "completed"))] == pytest.approx(3.4)
    assert sums[(("definition", "config:checks.json"), ("status", "failed"))] == pytest.approx(0.3)
    # A run that never ran (no duration) is in no histogram.
    assert not any(dict(labels)["status"] == "cancelled" for labels in counts)
    # Buckets are cumulative and end at the count.
    for labels, count in counts.items():
        assert buckets[tuple(sorted({**dict(labels), "le": "+Inf"}.items()))] == count


def test_node_duration_histogram_counts_attempts_by_type_and_status(client, runs):
    family = scrape(client)[0]["pipeline_node_duration_seconds"]
    counts, sums, buckets = samples(family, "_count"), samples(family, "_sum"), samples(family, "_bucket")
    assert counts == {
        (("definition", "alpha"), ("node_type", "context"), ("status", "succeeded")): 1,
        (("definition", "alpha"), ("node_type", "notify"), ("status", "succeeded")): 1,
        (("definition", "alpha"), ("node_type", "transform"), ("status", "failed")): 2,
    }
    assert sums[(("definition", "alpha"), ("node_type", "transform"), ("status", "failed"))] == pytest.approx(0.6)
    notify = {("definition", "alpha"), ("node_type", "notify"), ("status", "succeeded")}
    assert buckets[tuple(sorted(notify | {("le", "1.0")}))] == 0
    assert buckets[tuple(sorted(notify | {("le", "2.5")}))] == 1
    context = {("definition", "alpha"), ("node_type", "context"), ("status", "succeeded")}
    assert buckets[tuple(sorted(context | {("le", "0.01")}))] == 0
    assert buckets[tuple(sorted(context | {("le", "0.05")}))] == 1


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
