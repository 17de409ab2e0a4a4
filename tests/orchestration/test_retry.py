"""Retrying runs (run_actions.pipeline_run_retry, retry_run): a new run of the
original's snapshot and payload, and with --from-failed a start at the failed
node that reuses what the nodes before it produced. Real engine, real webhook
deliveries to local HTTP servers."""
from __future__ import annotations

import email
import importlib
import threading
import time

import pytest
from django.apps import apps as django_apps
from django.db import connection, transaction

from apps.orchestration import engine, inputs, launch, launchrequest, run_actions
from apps.orchestration.models import PipelineDefinition, PipelineRun
from tests.httpserver import start_server
from tests.notify.conftest import smtp_server  # noqa: F401 - the fixture receivers asks for
from tests.orchestration.test_hostile_input import HOSTILE_TEXT, Verdicts, rows
from tests.support import make_run

retry_root_migration = importlib.import_module("apps.orchestration.migrations.0015_run_retry_root")

pytestmark = pytest.mark.django_db

# announce: a side effect that must happen once; check: answers 500, then 200;
# report: reads announce's output, so a reused output must reach later nodes.
FLAKY = {
    "version": "1.0",
    "nodes": [
        {"id": "announce", "type": "notify", "config": {"driver": "webhook", "url_env": "HOOK_A_URL"}, "next": "check"},
        {"id": "check", "type": "notify", "config": {"driver": "webhook", "url_env": "HOOK_B_URL"}, "next": "report"},
        {
            "id": "report",
            "type": "transform",
            "config": {"mapping": {"announced": "announce.succeeded", "server": "payload.server"}},
        },
    ],
}


@pytest.fixture
def hooks(settings, monkeypatch):
    """Two recording servers: ``a`` for announce, ``b`` for check (its first answer is a 500)."""
    settings.OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    a, stop_a = start_server()
    b, stop_b = start_server()
    b.queue_json({"error": "down"}, status=500)
    monkeypatch.setenv("HOOK_A_URL", a.url("/announce"))
    monkeypatch.setenv("HOOK_B_URL", b.url("/check"))
    try:
        yield a, b
    finally:
        stop_a()
        stop_b()


@pytest.fixture
def failed_run(hooks) -> PipelineRun:
    """A run of the stored definition 'flaky' that failed at its second node, 'check'."""
    PipelineDefinition.objects.create(name="flaky", config=FLAKY)
    run = launch.pipeline_run_create(request=launchrequest.LaunchRequest(resolved=inputs.definition_resolve(name="flaky"), payload={"server": "web-01"},
        source="grafana", environment="production",))
    run = engine.run_execute(run_id=run.pk)
    assert run.status == "failed" and run.error.startswith("Node 'check' failed: Notification failed"), run.error
    return run


def test_retry_stores_a_queued_run_of_the_original_snapshot_and_payload_and_enqueues_it_on_commit(
    failed_run, hooks, settings, django_capture_on_commit_callbacks
):
    settings.CELERY_BROKER_IS_EMBEDDED = False  # no broker is started: the message is only captured here
    # Editing the live definition must not change what a retry runs.
    PipelineDefinition.objects.filter(name="flaky").update(config={"version": "1.0", "nodes": FLAKY["nodes"][2:]})
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        retry = run_actions.pipeline_run_retry(run_id=failed_run.pk)
    assert len(callbacks) == 1  # the wake-up message, sent once the run is committed
    retry.refresh_from_db()
    assert retry.pk != failed_run.pk and retry.status == "queued"
    assert retry.trigger == "retry" and retry.retry_of == failed_run
    assert retry.config_snapshot == FLAKY and retry.payload == {"server": "web-01"}
    assert (retry.definition, retry.definition_name, retry.origin, retry.origin_kind) == (
        failed_run.definition, "flaky", "flaky", "definition"
    )
    assert (retry.source, retry.environment) == ("grafana", "production")
    assert retry.trace_id != failed_run.trace_id and retry.reused_results == {}
    assert list(failed_run.retries.all()) == [retry]
    # Without --from-failed every node runs again, the first one's side effect included.
    done = engine.run_execute(run_id=retry.pk)
    assert done.status == "completed", done.error
    assert "reused" not in done.result["node_results"]["announce"]
    assert len(hooks[0].requests) == 2


def test_from_failed_reuses_the_first_nodes_output_and_starts_at_the_failed_node(failed_run, hooks, run_command):
    a, b = hooks
    original = failed_run.result["node_results"]["announce"]
    result = run_command("retry_run", str(failed_run.pk), "--from-failed", "--inline", "--json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    retry = PipelineRun.objects.get(pk=data["run_id"])
    assert data["retry_of"] == failed_run.pk and data["trigger"] == "retry" and data["status"] == "completed"
    assert data["executed_nodes"] == ["announce", "check", "report"]
    reused = data["node_results"]["announce"]
    assert reused["reused"] is True and reused["status"] == "succeeded"
    assert reused["output"] == original["output"]
    assert "reused" not in data["node_results"]["check"]
    # The later transform read the reused output.
    assert data["node_results"]["report"]["output"] == {"announced": 1, "server": "web-01"}
    # The first node's side effect happened once in all; execution started at 'check'.
    assert len(a.requests) == 1 and len(b.requests) == 2
    assert list(retry.stages.values_list("node_id", "status")) == [("check", "succeeded"), ("report", "succeeded")]
    assert retry.reused_results == {"announce": original}


def test_a_retry_shows_its_link_and_other_runs_look_as_before(failed_run, hooks, run_command):
    before = run_command("show_run", str(failed_run.pk))
    assert "Retry of" not in before.stdout
    assert f"\nRun ID: {failed_run.pk}\nDuration: " in before.stdout
    assert run_command("show_run", str(failed_run.pk), "--json").json()["retry_of"] is None
    shown = run_command("retry_run", str(failed_run.pk), "--from-failed", "--inline")
    retry = PipelineRun.objects.get(retry_of=failed_run)
    assert shown.exit_code == 0, shown.stderr
    assert f"\nTrace ID: {retry.trace_id}\nRun ID: {retry.pk}\nRetry of: run {failed_run.pk}\nDuration: " in shown.stdout
    assert shown.stdout.endswith("✓ Pipeline completed successfully\n")
    assert run_command("show_run", str(failed_run.pk)).stdout == before.stdout


def test_a_reused_node_keeps_counting_after_a_takeover(failed_run, hooks):
    # A retry taken over by another worker: the reused node has no stage row, and is reused again.
    retry = launch.pipeline_run_create(request=run_actions.retry_request(run_id=failed_run.pk, from_failed=True))
    PipelineRun.objects.filter(pk=retry.pk).update(status="running", claimed_by="gone:1:x")
    done = engine.run_execute(run_id=retry.pk)
    assert done.status == "completed", done.error
    assert done.result["node_results"]["announce"]["reused"] is True
    assert done.result["node_results"]["report"]["output"]["announced"] == 1
    assert len(hooks[0].requests) == 1


@pytest.mark.parametrize("status", ["queued", "running"])
def test_a_run_still_queued_or_running_is_refused_with_nothing_stored(failed_run, run_command, status):
    PipelineRun.objects.filter(pk=failed_run.pk).update(status=status, finished_at=None)
    before = rows()
    result = run_command("retry_run", str(failed_run.pk), "--inline")
    assert result.exit_code == 2
    assert result.stderr == f"CommandError: Run {failed_run.pk} is still {status}: retry it once it has finished\n"
    assert result.stdout == "" and rows() == before


def test_unknown_runs_are_refused_with_nothing_stored(run_command, db):
    for run_id in ("999999", "0", "-3"):
        result = run_command("retry_run", "--", run_id)
        assert result.exit_code == 2
        assert result.stderr == f"CommandError: Pipeline run not found: {run_id}\n"
    assert rows() == (0, 0, 0)


def test_from_failed_is_refused_for_a_run_with_no_failed_node(failed_run, hooks, run_command):
    completed = run_command("retry_run", str(failed_run.pk), "--inline", "--json").json()
    cancelled = launch.pipeline_run_create(request=run_actions.retry_request(run_id=failed_run.pk, force=True))
    run_actions.pipeline_run_cancel(run_id=cancelled.pk)
    before = rows()
    for run_id, status in ((completed["run_id"], "completed"), (cancelled.pk, "cancelled")):
        result = run_command("retry_run", str(run_id), "--from-failed")
        assert result.exit_code == 2
        assert result.stderr == (
            f"CommandError: Run {run_id} did not fail at a node ({status}, no failed node): "
            "there is nothing to retry from; retry it without --from-failed\n"
        )
    assert rows() == before


def test_conflicting_flags_are_refused(failed_run, run_command):
    before = rows()
    for args in (["--inline", "--wait"], ["--timeout", "5"], ["--inline", "--follow"]):
        result = run_command("retry_run", str(failed_run.pk), *args)
        assert result.exit_code == 2, args
    assert rows() == before


@pytest.mark.django_db(transaction=True)  # run_from_argv closes the connection, as manage.py does
def test_hostile_run_ids_are_refused_in_one_line(failed_run):
    verdicts = Verdicts()
    for text in [*HOSTILE_TEXT, "99999999999999999999999", str(2**63), "-5"]:
        verdicts.run("retry_run", "--", text, refused=True)
        verdicts.run("retry_run", "--from-failed", "--inline", "--", text, refused=True)
        verdicts.run("retry_run", str(failed_run.pk), "--wait", "--timeout", text, refused=True)
    verdicts.assert_clean()


def test_retry_of_a_retry_from_failed_reuses_the_same_output(failed_run, hooks, run_command):
    first = run_command("retry_run", str(failed_run.pk), "--from-failed", "--inline", "--json").json()
    # Make the retry fail at 'check' too, then retry that one from its failed node.
    hooks[1].queue_json({"error": "down"}, status=500)
    again = run_command("retry_run", str(failed_run.pk), "--from-failed", "--force", "--inline", "--json")
    assert again.exit_code == 1
    last = run_command("retry_run", str(again.json()["run_id"]), "--from-failed", "--inline", "--json")
    assert last.exit_code == 0, last.stderr
    data = last.json()
    assert data["node_results"]["announce"]["reused"] is True
    assert data["node_results"]["announce"]["output"] == first["node_results"]["announce"]["output"]
    assert len(hooks[0].requests) == 1
    assert data["retry_of"] == again.json()["run_id"]


# --- a run retried once; the keys of a retry's notifications ---------------------------------------


def test_a_second_retry_is_refused_naming_the_newest_retry_unless_forced(failed_run, hooks, run_command):
    first = run_command("retry_run", str(failed_run.pk), "--inline", "--json")
    assert first.exit_code == 0, first.stderr
    first_id = first.json()["run_id"]
    before = rows()
    for args in (["--inline"], ["--from-failed", "--inline"], ["--wait"], []):
        refused = run_command("retry_run", str(failed_run.pk), *args)
        assert refused.exit_code == 2, args
        assert refused.stderr == (
            f"CommandError: Run {failed_run.pk} was already retried as run {first_id}: pass --force to retry it again\n"
        )
        assert refused.stdout == ""
    assert rows() == before
    forced = run_command("retry_run", str(failed_run.pk), "--force", "--inline", "--json")
    assert forced.exit_code == 0, forced.stderr
    assert forced.json()["retry_of"] == failed_run.pk
    # The newest earlier retry is the one named.
    again = run_command("retry_run", str(failed_run.pk), "--inline")
    assert again.exit_code == 2
    assert f"already retried as run {forced.json()['run_id']}:" in again.stderr
    # A retry can be retried in turn: it has no retry of its own.
    chained = run_command("retry_run", str(first_id), "--inline", "--json")
    assert chained.exit_code == 0, chained.stderr
    assert list(PipelineRun.objects.filter(retry_of=failed_run).values_list("pk", flat=True).order_by("pk")) == [
        first_id, forced.json()["run_id"]
    ]


def test_a_run_retried_and_pruned_in_between_is_not_found(failed_run, hooks):
    request = run_actions.retry_request(run_id=failed_run.pk)
    PipelineRun.objects.filter(pk=failed_run.pk).delete()
    with pytest.raises(launchrequest.LaunchError, match=f"^Pipeline run not found: {failed_run.pk}$") as caught:
        launch.pipeline_run_create(request=request)
    assert caught.value.refusal == launchrequest.Refusal.NOT_FOUND
    assert PipelineRun.objects.count() == 0


def test_list_runs_json_shows_what_each_run_retries(failed_run, hooks, run_command):
    retry = run_command("retry_run", str(failed_run.pk), "--from-failed", "--inline", "--json").json()
    listed = run_command("list_runs", "--json").json()
    assert [(row["run_id"], row["retry_of"]) for row in listed] == [(retry["run_id"], failed_run.pk), (failed_run.pk, None)]


@pytest.fixture
def receivers(request, settings, monkeypatch):
    """A webhook receiver, a PagerDuty stand-in and a real SMTP server, and a stored definition
    'keyed' that notifies through all three."""
    smtp = request.getfixturevalue("smtp_server")
    settings.OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    hook, stop_hook = start_server()
    pagerduty, stop_pagerduty = start_server()
    pagerduty.answer_json({"status": "success", "message": "Event processed"}, status=202)
    monkeypatch.setenv("HOOK_URL", hook.url("/hook"))
    monkeypatch.setenv("OPS_PD_KEY", "R0UT1NGk3y0123456789abcdef012345")
    PipelineDefinition.objects.create(name="keyed", config={"version": "1.0", "nodes": [
        {"id": "hook", "type": "notify", "config": {"driver": "webhook", "url_env": "HOOK_URL"}, "next": "mail"},
        {"id": "mail", "type": "notify", "config": {"driver": "email", "to": ["ops@example.com"]}, "next": "page"},
        {"id": "page", "type": "notify", "config": {
            "driver": "pagerduty", "routing_key_env": "OPS_PD_KEY", "events_url": pagerduty.url("/v2/enqueue"),
        }},
    ]})
    try:
        yield hook, smtp, pagerduty
    finally:
        stop_hook()
        stop_pagerduty()


def _sent_keys(receivers) -> list[tuple[str, str, str]]:
    """(Idempotency-Key, Message-ID, PagerDuty dedup key) of each run's notifications, in order."""
    hook, smtp, pagerduty = receivers
    message_ids = [email.message_from_bytes(m["content"])["Message-ID"] for m in smtp.messages]
    return list(zip(
        [r["headers"]["idempotency-key"] for r in hook.requests], message_ids,
        [r["json"]["dedup_key"] for r in pagerduty.requests], strict=True,
    ))


def test_every_retry_in_a_chain_notifies_with_the_keys_of_the_first_run(receivers, run_command):
    original = run_command("run_pipeline", "--definition", "keyed", "--inline", "--json").json()
    assert original["status"] == "completed", original["error"]
    root = original["run_id"]
    retry = run_command("retry_run", str(root), "--inline", "--json").json()
    # A retry of the retry, and a second retry of the first run: still the first run's keys.
    chained = run_command("retry_run", str(retry["run_id"]), "--inline", "--json").json()
    forced = run_command("retry_run", str(root), "--force", "--inline", "--json").json()
    assert [run["status"] for run in (retry, chained, forced)] == ["completed"] * 3
    assert [run["retry_of"] for run in (retry, chained, forced)] == [root, retry["run_id"], root]
    assert set(PipelineRun.objects.filter(retry_of__isnull=False).values_list("retry_root", flat=True)) == {root}
    keys = _sent_keys(receivers)
    assert len(keys) == 4 and len(set(keys)) == 1
    assert keys[0][0] == f"{root}-hook" and keys[0][1].startswith(f"<{root}-mail.")
    # A run that is no retry has keys of its own (PagerDuty's is per pipeline and host, by design).
    fresh = run_command("run_pipeline", "--definition", "keyed", "--inline", "--json").json()
    last = _sent_keys(receivers)[-1]
    assert last[0] == f"{fresh['run_id']}-hook" and last[1].startswith(f"<{fresh['run_id']}-mail.")
    assert last[2] == keys[0][2]
    # The message itself still names the run that sent it.
    assert receivers[0].requests[1]["json"]["data"]["run"]["run_id"] == retry["run_id"]


def test_the_retry_chains_of_runs_stored_before_the_retry_root_are_filled_in(db):
    first, second, third, other = (make_run(FLAKY["nodes"], name="flaky") for _ in range(4))
    PipelineRun.objects.filter(pk=second.pk).update(retry_of=first, trigger="retry")
    PipelineRun.objects.filter(pk=third.pk).update(retry_of=second, trigger="retry")
    retry_root_migration.retry_roots_fill(django_apps, None)
    roots = dict(PipelineRun.objects.values_list("pk", "retry_root"))
    assert roots == {first.pk: None, second.pk: first.pk, third.pk: first.pk, other.pk: None}


# --- two retries of one run at once ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_of_two_retries_of_one_run_at_once_one_is_launched_and_the_other_refused(hooks):
    PipelineDefinition.objects.create(name="flaky", config=FLAKY)
    original = engine.run_execute(run_id=make_run(FLAKY["nodes"], name="flaky").pk)
    assert original.is_terminal
    first_stored, release, second_waits = threading.Event(), threading.Event(), threading.Event()
    outcome: dict = {}

    def first():
        # Stores its retry and keeps its transaction open until the second retry waits on it.
        try:
            with transaction.atomic():
                outcome["first"] = launch.pipeline_run_create(request=run_actions.retry_request(run_id=original.pk))
                first_stored.set()
                release.wait(30)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
            outcome["first"] = exc
            first_stored.set()
        finally:
            connection.close()

    def blocking_statement(execute, sql, params, many, context):
        # The statement that waits for the first retry's transaction: SQLite's BEGIN IMMEDIATE
        # (the database's write lock), PostgreSQL's lock of the original's row.
        if sql.startswith("BEGIN") or "FOR NO KEY UPDATE" in sql:
            second_waits.set()
        return execute(sql, params, many, context)

    def second():
        try:
            with connection.execute_wrapper(blocking_statement):
                outcome["second"] = launch.pipeline_run_create(request=run_actions.retry_request(run_id=original.pk))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
            outcome["second"] = exc
        finally:
            second_waits.set()
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert first_stored.wait(30)
    threads[1].start()
    try:
        assert second_waits.wait(30)
        if connection.vendor == "postgresql":
            # Seen from the server: the second launch waits on a lock the first one holds.
            deadline = time.monotonic() + 30
            while not _lock_waiters() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert _lock_waiters() == 1
        assert threads[1].is_alive()
    finally:
        release.set()
        for thread in threads:
            thread.join(30)
    launched = outcome["first"]
    assert isinstance(launched, PipelineRun), launched
    refused = outcome["second"]
    assert isinstance(refused, launchrequest.AlreadyRetried), refused
    assert str(refused) == f"Run {original.pk} was already retried as run {launched.pk}"
    assert list(PipelineRun.objects.filter(retry_of=original).values_list("pk", flat=True)) == [launched.pk]


def _lock_waiters() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]
