"""/api/v1/runs through the real app and database: launch, show (with ?wait), list page by
page, cancel and retry, and every refusal; each answer checked against the OpenAPI document.
Runs that travel to a real worker, and the refusals that need a real broker, are in
tests/workers/test_api_runs.py."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.orchestration import engine, rendering
from apps.orchestration.models import PipelineDefinition, PipelineRun
from apps.orchestration.validation import validate_definition
from tests.support import TINY_NODES, make_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_broker")]

TINY = {"version": "1.0", "nodes": TINY_NODES}



@pytest.fixture
def writer(api_client):
    return api_client("runs:read", "runs:write")


@pytest.fixture
def reader(api_client):
    return api_client("runs:read")


@pytest.fixture
def tiny(db):
    return PipelineDefinition.objects.create(name="tiny", config=TINY)


def failed_run(**fields) -> PipelineRun:
    """A run of 'tiny' that failed at its one node, as the engine records it."""
    result = {
        "executed_nodes": ["shape"], "skipped_nodes": [],
        "node_results": {"shape": {"type": "transform", "status": "failed", "error": "boom"}},
    }
    return make_run(TINY_NODES, name="tiny", status="failed", error="Node 'shape' failed: boom",
                    finished_at=timezone.now(), result=result, **fields)


# --- POST /runs ------------------------------------------------------------------------------


def test_a_launch_of_a_stored_definition_is_a_queued_api_run(writer, tiny):
    response = writer.post("/api/v1/runs", {
        "definition": "tiny", "payload": {"x": 3}, "environment": "production", "trace_id": "req-1",
    })
    assert response.status_code == 201, response.json()
    body = response.json()
    run = PipelineRun.objects.get()
    assert body == {
        "run_id": run.pk, "trace_id": "req-1", "status": "queued", "target_host": None, "group_id": None,
        "run_ids": [run.pk], "runs": [rendering.queued_as_dict(run)], "note": None,
    }
    assert (run.trigger, run.source, run.environment, run.payload) == ("api", "auto", "production", {"x": 3})
    assert (run.definition, run.origin_kind, run.config_snapshot) == (tiny, "definition", TINY)


def test_a_definition_given_whole_runs_under_an_origin_of_its_content(writer):
    first = writer.post("/api/v1/runs", {"config": TINY, "source": "grafana"})
    again = writer.post("/api/v1/runs", {"config": {"nodes": TINY_NODES, "version": "1.0"}})
    other = writer.post("/api/v1/runs", {"config": {**TINY, "description": "another"}})
    assert [r.status_code for r in (first, again, other)] == [201, 201, 201]
    runs = {r.json()["run_id"]: PipelineRun.objects.get(pk=r.json()["run_id"]) for r in (first, again, other)}
    a, b, c = runs.values()
    assert a.origin_kind == "config" and a.definition_name == "" and a.definition is None
    assert a.origin.startswith("api:") and len(a.origin) == 20
    # The same definition (whatever the order of its keys) shares an origin, and so max_concurrent.
    assert a.origin == b.origin != c.origin
    assert (a.source, b.source) == ("grafana", "auto")


def test_a_launch_runs_to_the_end_with_the_record_run_pipeline_prints(writer, reader, tiny):
    run_id = writer.post("/api/v1/runs", {"definition": "tiny", "payload": {"x": 5}}).json()["run_id"]
    engine.run_execute(run_id=run_id)
    body = reader.get(f"/api/v1/runs/{run_id}").json()
    assert body == rendering.run_json(PipelineRun.objects.get(pk=run_id))
    assert body["status"] == "completed" and body["exit_code"] == 0
    assert body["node_results"]["shape"]["output"] == {"x": 5}


def test_an_invalid_definition_is_400_with_each_validation_message_and_stores_nothing(writer):
    config = {"version": "1.0", "nodes": [
        {"id": "a", "type": "nope"}, {"id": "b", "type": "transform", "next": "missing"},
    ]}
    response = writer.post("/api/v1/runs", {"config": config})
    assert response.status_code == 400
    messages = validate_definition(config)
    assert len(messages) >= 2
    assert response.json() == {"error": "Pipeline definition invalid", "errors": messages}
    assert PipelineRun.objects.count() == 0


@pytest.mark.parametrize(("body", "message"), [
    ({"definition": "tiny", "config": TINY}, "Cannot specify both definition and config"),
    ({}, "Give the run's definition: definition (a stored definition's name) or config"),
    ({"payload": {}}, "Give the run's definition: definition (a stored definition's name) or config"),
    ({"definition": "nothing-here"}, "Pipeline definition not found: nothing-here"),
    ({"definition": "tiny", "source": ""}, "--source must be 1 to 50 printable characters"),
    ({"definition": "tiny", "environment": "e" * 51}, "--environment must be 1 to 50 printable characters"),
    ({"definition": "tiny", "trace_id": "has space"},
     "--trace-id must be 1 to 64 printable ASCII characters without spaces"),
    ({"definition": "tiny", "idempotency_key": "k" * 201},
     "--idempotency-key must be 1 to 200 printable ASCII characters without spaces"),
    ({"definition": "tiny", "idempotency_key": "schedule:tiny:2026-12-07T09:00:00+00:00"},
     "--idempotency-key must not start with 'schedule:': those keys are the scheduler's"),
    ({"definition": "tiny", "host": "not a host"},
     "--host must be a host name (letters, digits, '.', '-' and '_', starting with a letter or digit, at most "
     "100), auto or all: not a host"),
])
def test_bad_launches_are_400_with_the_clis_message_and_store_nothing(writer, tiny, body, message):
    response = writer.post("/api/v1/runs", body)
    assert response.status_code == 400, response.json()
    assert response.json() == {"error": message, "errors": [message]}
    assert PipelineRun.objects.count() == 0


@pytest.mark.parametrize("body", [
    {"definition": 7},
    {"definition": "tiny", "payload": [1, 2]},
    {"definition": "tiny", "payload": "text"},
    {"config": [TINY]},
    {"definition": "tiny", "trace_id": 12},
    {"definition": "tiny", "definiton": "typo"},
    {"definition": "tiny", "host": ["a"]},
    {"definition": None, "config": None, "payload": None, "extra": 1},
])
def test_fields_of_the_wrong_type_or_unknown_fields_are_400(writer, tiny, body):
    response = writer.post("/api/v1/runs", body)
    assert response.status_code == 400
    assert response.json()["error"] == "The request is not valid" and response.json()["errors"]
    assert PipelineRun.objects.count() == 0


def test_an_idempotency_key_a_run_has_answers_200_with_that_run_and_launches_nothing(writer, tiny):
    first = writer.post("/api/v1/runs", {"definition": "tiny", "idempotency_key": "nightly-2026-03-01"})
    assert first.status_code == 201
    again = writer.post("/api/v1/runs", {"definition": "tiny", "idempotency_key": "nightly-2026-03-01",
                                         "payload": {"x": 1}})
    assert again.status_code == 200
    run = PipelineRun.objects.get()
    assert again.json() == rendering.run_json(run)
    assert again.json()["idempotency_key"] == "nightly-2026-03-01" and run.payload == {}


def test_an_idempotency_key_of_another_definitions_run_answers_409_and_launches_nothing(writer, tiny):
    PipelineDefinition.objects.create(name="other", config=TINY)
    first = writer.post("/api/v1/runs", {"definition": "tiny", "idempotency_key": "nightly-2026-03-01"})
    assert first.status_code == 201
    message = f"Idempotency key nightly-2026-03-01 belongs to run {first.json()['run_id']} of definition tiny"
    for body in ({"definition": "other"}, {"config": TINY}):
        refused = writer.post("/api/v1/runs", {**body, "idempotency_key": "nightly-2026-03-01"})
        assert refused.status_code == 409
        assert refused.json() == {"error": message, "errors": [message]}
    assert PipelineRun.objects.count() == 1
    # A definition given inline owns its keys too: another inline definition is another origin.
    inline = writer.post("/api/v1/runs", {"config": TINY, "idempotency_key": "inline-1"})
    assert inline.status_code == 201
    same = writer.post("/api/v1/runs", {"config": TINY, "idempotency_key": "inline-1"})
    assert same.status_code == 200 and same.json()["run_id"] == inline.json()["run_id"]
    changed = {**TINY, "description": "another"}
    refused = writer.post("/api/v1/runs", {"config": changed, "idempotency_key": "inline-1"})
    assert refused.status_code == 409
    assert refused.json()["error"].startswith(f"Idempotency key inline-1 belongs to run {inline.json()['run_id']} of config api:")


def test_a_definitions_hosts_fan_out_to_one_run_each_sharing_a_group(writer):
    PipelineDefinition.objects.create(name="fleet", config={**TINY, "hosts": ["web-01", "web-02"]})
    response = writer.post("/api/v1/runs", {"definition": "fleet"})
    assert response.status_code == 201
    body = response.json()
    runs = list(PipelineRun.objects.order_by("pk"))
    assert body["run_ids"] == [run.pk for run in runs] and body["run_id"] == runs[0].pk
    assert [item["target_host"] for item in body["runs"]] == ["web-01", "web-02"]
    assert len({item["group_id"] for item in body["runs"]}) == 1 and body["group_id"] is not None
    assert {run.trigger for run in runs} == {"api"}


def test_an_idempotency_key_cannot_name_a_fan_out(writer):
    PipelineDefinition.objects.create(name="fleet", config={**TINY, "hosts": ["web-01", "web-02"]})
    response = writer.post("/api/v1/runs", {"definition": "fleet", "idempotency_key": "once"})
    assert response.status_code == 400
    assert response.json()["error"].startswith("--idempotency-key names one run")
    assert PipelineRun.objects.count() == 0


def test_host_auto_targets_the_host_the_alert_names_and_says_when_it_names_none(writer, tiny):
    alert = {"alerts": [{"labels": {"alertname": "HighCPU", "instance": "db-03:9100"}, "status": "firing"}]}
    named = writer.post("/api/v1/runs", {"definition": "tiny", "host": "auto", "payload": alert,
                                         "source": "alertmanager"})
    assert named.status_code == 201 and named.json()["target_host"] == "db-03"
    unnamed = writer.post("/api/v1/runs", {"definition": "tiny", "host": "auto"})
    assert unnamed.status_code == 201
    assert unnamed.json()["target_host"] is None
    assert unnamed.json()["note"] == "The alert names no host: the run goes to the shared queue."


# --- GET /runs/<id> --------------------------------------------------------------------------


def test_an_unknown_run_is_404_json(reader):
    for run_id in ("999999", "0", str(2**63), str(2**70)):
        response = reader.get(f"/api/v1/runs/{run_id}")
        assert response.status_code == 404
        assert response.json() == {"error": f"Pipeline run not found: {run_id}"}


@pytest.mark.parametrize("run_id", ["abc", "1.5", "1e3", "%20", "0x10", "１"])
def test_a_run_id_that_is_not_an_integer_is_400_json(reader, run_id):
    response = reader.get(f"/api/v1/runs/{run_id}", check=False)
    assert response.status_code in (400, 404)
    assert set(response.json()) <= {"error", "errors"}


@pytest.mark.parametrize("wait", ["0", "-1", "60.5", "61", "nan", "inf", "-inf", "1e309", "soon", ""])
def test_a_wait_out_of_range_is_400_and_waits_for_nothing(reader, tiny, wait):
    run = make_run(TINY_NODES, name="tiny")
    started = time.monotonic()
    response = reader.get(f"/api/v1/runs/{run.pk}", {"wait": wait})
    assert time.monotonic() - started < 5
    assert response.status_code == 400, response.json()
    assert response.json()["errors"]


def test_wait_on_a_finished_run_answers_at_once(reader, tiny):
    run = engine.run_execute(run_id=make_run(TINY_NODES, name="tiny").pk)
    started = time.monotonic()
    response = reader.get(f"/api/v1/runs/{run.pk}", {"wait": "60"})
    assert time.monotonic() - started < 5
    assert response.json()["status"] == "completed"


def test_wait_on_a_run_that_stays_queued_answers_it_queued_at_the_deadline(reader, tiny):
    run = make_run(TINY_NODES, name="tiny")
    started = time.monotonic()
    response = reader.get(f"/api/v1/runs/{run.pk}", {"wait": "1.5"})
    took = time.monotonic() - started
    assert response.status_code == 200
    assert response.json()["status"] == "queued" and response.json()["exit_code"] == 3
    assert 1.5 <= took < 10


# --- GET /runs -------------------------------------------------------------------------------


def test_the_listing_pages_through_every_run_once_with_the_fields_of_list_runs(reader, tiny):
    runs = [make_run(TINY_NODES, name="tiny") for _ in range(7)]
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        body = reader.get("/api/v1/runs", query).json()
        seen += body["runs"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [row["run_id"] for row in seen] == sorted((run.pk for run in runs), reverse=True)
    from apps.orchestration import listings, selectors

    assert seen == [listings.run_listing_dict(row) for row in selectors.pipeline_runs_list(limit=7)]


def test_the_listing_keeps_to_its_filters_and_defaults_to_50(reader, tiny):
    for _ in range(52):
        make_run(TINY_NODES, name="tiny")
    failed = failed_run()
    old = make_run(TINY_NODES, name="tiny", created_at=timezone.now() - timedelta(days=3))
    assert len(reader.get("/api/v1/runs").json()["runs"]) == 50
    assert [r["run_id"] for r in reader.get("/api/v1/runs", {"status": "failed"}).json()["runs"]] == [failed.pk]
    recent = reader.get("/api/v1/runs", {"since": "1d", "limit": "500"}).json()
    assert old.pk not in {r["run_id"] for r in recent["runs"]} and recent["next_cursor"] is None
    assert reader.get("/api/v1/runs", {"definition": "other"}).json() == {"runs": [], "next_cursor": None}
    assert reader.get("/api/v1/runs", {"trigger": "api"}).json()["runs"] == []
    assert reader.get("/api/v1/runs", {"host": "web-01"}).json()["runs"] == []


@pytest.mark.parametrize(("query", "message"), [
    ({"limit": "0"}, "--limit must be from 1 to 500"),
    ({"limit": "501"}, "--limit must be from 1 to 500"),
    ({"status": "done"}, "--status must be one of: queued, running, completed, failed, cancelled"),
    ({"since": "yesterday"},
     "--since must be a duration above 0 such as 30s, 15m, 2h or 7d (at most 1000000000s), not yesterday"),
    ({"definition": "a b"}, "--definition must be a definition name: letters, digits, '-' and '_', at most 100"),
    ({"cursor": "nonsense"}, "cursor is not one this listing gave (use next_cursor as it was returned)"),
])
def test_bad_listing_values_are_400_with_the_message_of_list_runs(reader, query, message):
    response = reader.get("/api/v1/runs", query)
    assert response.status_code == 400
    assert response.json() == {"error": message, "errors": [message]}


def test_a_limit_that_is_not_a_number_is_400(reader):
    response = reader.get("/api/v1/runs", {"limit": "ten"})
    assert response.status_code == 400 and response.json()["errors"]


# --- cancel and retry -------------------------------------------------------------------------


def test_cancel_of_a_queued_run_cancels_it(writer, tiny):
    run = make_run(TINY_NODES, name="tiny")
    response = writer.post(f"/api/v1/runs/{run.pk}/cancel")
    assert response.status_code == 200
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert response.json() == rendering.run_json(run) | {"message": f"Run {run.pk} cancelled."}


def test_cancel_of_a_running_run_asks_it_to_stop(writer, tiny):
    run = make_run(TINY_NODES, name="tiny", status="running", current_node="shape", claimed_by="w:1:t",
                   lease_expires_at=timezone.now() + timedelta(minutes=5), started_at=timezone.now())
    response = writer.post(f"/api/v1/runs/{run.pk}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "running"
    assert response.json()["message"] == (
        f"Cancellation of run {run.pk} requested: node 'shape' is not interrupted, and no node after it starts."
    )
    assert PipelineRun.objects.get(pk=run.pk).cancel_requested_at is not None


def test_cancel_with_stop_node_asks_to_stop_the_running_node(writer, tiny):
    run = make_run(TINY_NODES, name="tiny", status="running", current_node="shape", claimed_by="w:1:t",
                   lease_expires_at=timezone.now() + timedelta(minutes=5), started_at=timezone.now())
    response = writer.post(f"/api/v1/runs/{run.pk}/cancel", {"stop_node": True}, check=True)
    assert response.status_code == 200
    assert response.json()["message"] == (
        f"Cancellation of run {run.pk} requested: node 'shape' is being stopped, and no node after it starts."
    )
    assert PipelineRun.objects.get(pk=run.pk).cancel_stop_node


def test_cancel_of_a_cancelled_run_says_so(writer, tiny):
    run = make_run(TINY_NODES, name="tiny")
    assert writer.post(f"/api/v1/runs/{run.pk}/cancel").json()["message"] == f"Run {run.pk} cancelled."
    again = writer.post(f"/api/v1/runs/{run.pk}/cancel", {"stop_node": True}, check=True)
    assert again.status_code == 200 and again.json()["message"] == f"Run {run.pk} is already cancelled."


@pytest.mark.parametrize("body", [{"stop_node": "yes"}, {"stop_node": 1}, {"force": True}])
def test_a_cancel_body_that_is_not_understood_is_refused_and_nothing_changes(writer, tiny, body):
    run = make_run(TINY_NODES, name="tiny")
    response = writer.post(f"/api/v1/runs/{run.pk}/cancel", body)
    assert response.status_code == 400, response.json()
    assert response.json()["error"]
    assert PipelineRun.objects.get(pk=run.pk).status == "queued"


def test_cancel_refusals(writer, tiny):
    done = engine.run_execute(run_id=make_run(TINY_NODES, name="tiny").pk)
    finished = writer.post(f"/api/v1/runs/{done.pk}/cancel")
    assert finished.status_code == 409
    assert finished.json()["error"] == f"Run {done.pk} has already finished (completed)"
    unknown = writer.post("/api/v1/runs/424242/cancel")
    assert unknown.status_code == 404 and unknown.json()["error"] == "Pipeline run not found: 424242"


def test_retry_launches_a_linked_run_with_or_without_a_body(writer, tiny):
    original = failed_run()
    plain = writer.post(f"/api/v1/runs/{original.pk}/retry", check=True)
    assert plain.status_code == 201, plain.json()
    # A second retry of the run is refused, naming the first, unless forced.
    before = PipelineRun.objects.count()
    again = writer.post(f"/api/v1/runs/{original.pk}/retry", {"from_failed": True})
    assert again.status_code == 409
    message = f'Run {original.pk} was already retried as run {plain.json()["run_id"]}: pass "force": true to retry it again'
    assert again.json() == {"error": message, "errors": [message]}
    assert PipelineRun.objects.count() == before
    from_failed = writer.post(f"/api/v1/runs/{original.pk}/retry", {"from_failed": True, "force": True})
    assert from_failed.status_code == 201
    retries = list(PipelineRun.objects.filter(retry_of=original).order_by("pk"))
    assert [r.pk for r in retries] == [plain.json()["run_id"], from_failed.json()["run_id"]]
    assert {(r.trigger, r.status) for r in retries} == {("retry", "queued")}
    assert plain.json()["runs"] == [rendering.queued_as_dict(retries[0])]


def test_retry_refusals_store_nothing(writer, tiny):
    queued = make_run(TINY_NODES, name="tiny")
    done = engine.run_execute(run_id=make_run(TINY_NODES, name="tiny").pk)
    before = PipelineRun.objects.count()
    cases = [
        (queued.pk, {}, 409, f"Run {queued.pk} is still queued: retry it once it has finished"),
        (done.pk, {"from_failed": True}, 409, f"Run {done.pk} did not fail at a node (completed, no failed node): "
         "there is nothing to retry from; retry it without --from-failed"),
        (999999, {}, 404, "Pipeline run not found: 999999"),
    ]
    for run_id, body, status, message in cases:
        response = writer.post(f"/api/v1/runs/{run_id}/retry", body)
        assert response.status_code == status
        assert response.json()["error"] == message
    for body in ({"from_failed": "yes"}, {"from_failed": 1}, {"force": "yes"}, {"again": True}, [True]):
        assert writer.post(f"/api/v1/runs/{done.pk}/retry", body).status_code == 400
    assert PipelineRun.objects.count() == before


# --- keys and scopes --------------------------------------------------------------------------


def test_every_route_needs_a_key_and_its_scope_and_stores_nothing_without(api_client, tiny):
    run = failed_run()
    anonymous, reader_only, writer_only = api_client(), api_client("runs:read"), api_client("runs:write")
    before = PipelineRun.objects.count()
    writes = [("/api/v1/runs", {"definition": "tiny"}), (f"/api/v1/runs/{run.pk}/cancel", None),
              (f"/api/v1/runs/{run.pk}/retry", None)]
    reads = ["/api/v1/runs", f"/api/v1/runs/{run.pk}"]
    for path, body in writes:
        assert anonymous.post(path, body).status_code == 401
        refused = reader_only.post(path, body)
        assert refused.status_code == 403
        assert refused.json() == {"error": "This API key does not have the scope 'runs:write'"}
    for path in reads:
        assert anonymous.get(path).status_code == 401
        assert writer_only.get(path).status_code == 403
    assert PipelineRun.objects.count() == before
    assert PipelineRun.objects.get(pk=run.pk).status == "failed"
