"""The alert receiver end to end: a real Prometheus Alertmanager (tests/alertmanager.py) posts
its notifications to POST /api/v1/alerts/alertmanager served by a real gunicorn, and a real
worker completes the runs. Repeats start nothing, a resolved notice starts runs only where
`on` has resolved, a wrong key stores nothing, and a broker that is down loses nothing. A storm
of posts against a low API_RATE_LIMIT is answered 202 or 429, with exactly the runs answered."""
from __future__ import annotations

import http.client
import json
import secrets
import threading
import time

import pytest

from apps.alerts.models import Alert, Incident
from apps.orchestration.models import AlertDelivery, PipelineDefinition, PipelineRun
from tests.alertmanager import alert
from tests.support import TINY_NODES, wait_for
from tests.workers.conftest import WebServer

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 90  # seconds: a notification is due within group_wait / group_interval (1-2 s), plus a loaded machine
HOST = "db-07"  # the host the alerts name, and the worker serves


@pytest.fixture(scope="module")
def web(base_env):
    """A real gunicorn for the module, with the rate limit off (the storm test starts its own)."""
    server = WebServer({**base_env, "API_RATE_LIMIT": "off"})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def key(transactional_db):
    from apps.api.keys import api_key_create

    return api_key_create(name="alertmanager", scopes=["alerts"])[1]


def define(name: str, **trigger) -> PipelineDefinition:
    """An active definition of TINY_NODES started by alertmanager alerts of team db."""
    trigger = {"source": "alertmanager", "match": 'alert.labels["team"] == "db"', **trigger}
    return PipelineDefinition.objects.create(name=name, config={
        "version": "1.0", "nodes": TINY_NODES, "triggers": [{"alert": trigger}],
    })


def runs_of(name: str) -> list[PipelineRun]:
    return list(PipelineRun.objects.filter(definition__name=name).order_by("pk"))


def ended(name: str, count: int) -> list[PipelineRun] | None:
    """The runs of ``name`` once there are ``count`` of them and all have ended."""
    runs = runs_of(name)
    if len(runs) == count and all(run.status in PipelineRun.TERMINAL for run in runs):
        return runs
    return None


def rows() -> tuple[int, int, int, int]:
    return (Alert.objects.count(), Incident.objects.count(), PipelineRun.objects.count(),
            AlertDelivery.objects.count())


def test_alertmanager_firing_repeated_and_resolved(web, alertmanager, start_worker, key, cli):
    start_worker(MONITOR_HOST=HOST)
    define("db-firing")
    define("db-both", on=["firing", "resolved"])
    # Re-sent every few seconds while firing, as a real repeat_interval does (shortened).
    manager = alertmanager(receiver_url=f"http://127.0.0.1:{web.port}/api/v1/alerts/alertmanager", key=key,
                           repeat_interval="3s")
    labels = {"severity": "critical", "team": "db", "instance": f"{HOST}:9100"}
    manager.post_alerts([alert("DiskFull", labels=labels), alert("Other", labels={"team": "web"})])

    [firing] = wait_for(lambda: ended("db-firing", 1), timeout=WAIT, what="the firing run of db-firing to end")
    [both] = wait_for(lambda: ended("db-both", 1), timeout=WAIT, what="the firing run of db-both to end")
    for run in (firing, both):
        assert (run.status, run.trigger, run.source, run.target_host) == ("completed", "alert", "alertmanager",
                                                                          HOST), run.error
        assert run.payload["status"] == "firing" and run.payload["receiver"] == "pipelines"
        assert [a["labels"]["alertname"] for a in run.payload["alerts"]] == ["DiskFull"]
    listed = cli("list_runs", "--trigger", "alert", "--json")
    assert listed.exit_code == 0, listed.stderr
    assert sorted(item["run_id"] for item in listed.json()) == sorted([firing.pk, both.pk])
    assert {(item["trigger"], item["status"]) for item in listed.json()} == {("alert", "completed")}
    assert Alert.objects.filter(name="Other").exists()  # recorded, though it matched no trigger

    # The same alert posted again, and Alertmanager's own repeats: recognised, no second run.
    manager.post_alerts([alert("DiskFull", labels=labels)])
    repeat = f"runs=- deduplicated={','.join(str(r.pk) for r in sorted((firing, both), key=lambda r: r.pk))}"
    wait_for(lambda: repeat in web.log(), timeout=WAIT,
             what=f"a repeat of the firing group answered as deduplicated; web log:\n{web.log()[-3000:]}")
    assert [run.pk for run in runs_of("db-firing")] == [firing.pk]
    assert [run.pk for run in runs_of("db-both")] == [both.pk]

    # Resolved: a run only for the definition whose `on` has resolved.
    manager.post_alerts([alert("DiskFull", labels=labels, resolved=True)])
    [_, resolved] = wait_for(lambda: ended("db-both", 2), timeout=WAIT, what="the resolved run of db-both to end")
    assert (resolved.status, resolved.trigger, resolved.target_host) == ("completed", "alert", HOST), resolved.error
    assert resolved.payload["status"] == "resolved"
    assert [a["status"] for a in resolved.payload["alerts"]] == ["resolved"]
    # Its notification is the one db-firing saw too (same transaction): db-firing started nothing.
    assert [run.pk for run in runs_of("db-firing")] == [firing.pk]
    assert Alert.objects.get(name="DiskFull").status == "resolved"
    assert key not in web.log() and key not in manager.log()


def test_an_alertmanager_with_a_wrong_key_is_answered_401_and_stores_nothing(web, alertmanager, key):
    define("db-firing")
    wrong = "pl_" + secrets.token_urlsafe(40)
    manager = alertmanager(receiver_url=f"http://127.0.0.1:{web.port}/api/v1/alerts/alertmanager", key=wrong)
    manager.post_alerts([alert("DiskFull", labels={"team": "db", "instance": f"{HOST}:9100"})])
    # Alertmanager logs the failed notification with the receiver's status code.
    refused = "unexpected status code 401"
    wait_for(lambda: refused in manager.log(), timeout=WAIT,
             what=f"Alertmanager to report the 401; its log:\n{manager.log()[-3000:]}")
    assert '{\\"error\\": \\"The API key is not valid (unknown or revoked)\\"}' in manager.log()
    assert rows() == (0, 0, 0, 0)
    assert wrong not in web.log() and wrong not in manager.log()


def post(port: int, key: str, body: dict, path: str = "/api/v1/alerts/generic", timeout: float = 60):
    """POST ``body`` as JSON with the key; returns (status, headers, parsed JSON)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", path, json.dumps(body),
                           {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        connection.close()


def test_a_broker_that_is_down_still_answers_202_with_the_run_stored_queued(base_env, key):
    define("db-firing")
    server = WebServer({**base_env, "CELERY_BROKER_URL": "redis://127.0.0.1:1/0", "API_RATE_LIMIT": "off"})
    try:
        body = {"version": "4", "receiver": "pipelines", "status": "firing", "groupKey": "{}:{}",
                "alerts": [{"status": "firing", "fingerprint": "00aa11bb22cc33dd",
                            "labels": {"alertname": "DiskFull", "team": "db", "instance": f"{HOST}:9100"}}]}
        status, _, answer = post(server.port, key, body, path="/api/v1/alerts/alertmanager")
        assert status == 202, answer
        run = PipelineRun.objects.get()
        # Logged before the answer, but read from the server's output by a thread of this process.
        logged = server.wait_for_log(f"event=run.enqueue_failed run_id={run.pk}")
        log = server.log()
    finally:
        server.stop()
    assert answer == {"runs": [run.pk], "deduplicated": [], "unmatched": 0}
    # Stored queued, for the recovery sweep to send once the broker is back.
    assert (run.status, run.trigger, run.target_host) == ("queued", "alert", HOST)
    assert Alert.objects.count() == 1 and AlertDelivery.objects.get().run_ids == [run.pk]
    assert logged and "Traceback" not in log, log


STORM_POSTS = 300
STORM_THREADS = 16
# A minute's budget far below the storm: however slowly a loaded machine answers, the storm ends
# within the minute (asserted), so the budget is used up and the rest of the posts are refused.
STORM_LIMIT = 100


def test_a_storm_of_alert_posts_is_answered_202_or_429_with_exactly_the_runs_answered(base_env, key):
    PipelineDefinition.objects.create(name="every-alert", config={
        "version": "1.0", "nodes": TINY_NODES, "triggers": [{"alert": {"source": "generic"}}],
    })
    server = WebServer({**base_env, "API_RATE_LIMIT": f"{STORM_LIMIT}/minute"})
    answers: list[tuple[int, dict, dict]] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    gate = threading.Barrier(STORM_THREADS)

    def sender(first: int) -> None:
        gate.wait(60)  # all threads post at once
        for index in range(first, STORM_POSTS, STORM_THREADS):
            # Distinct alert groups: each is a new notification, never a repeat.
            body = {"name": f"Storm {index}", "severity": "critical", "status": "firing",
                    "labels": {"storm": str(index)}}
            try:
                answer = post(server.port, key, body)
            except Exception as exc:  # noqa: BLE001 - any failure to get an answer fails the test below
                with lock:
                    failures.append(exc)
                continue
            with lock:
                answers.append(answer)

    started = time.monotonic()
    try:
        threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(STORM_THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads), "a sender was still waiting for an answer"
    finally:
        server.stop()
    took = time.monotonic() - started
    assert took < 60, f"the storm took {took:.1f}s"
    assert not failures, failures[:3]
    assert len(answers) == STORM_POSTS
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {202, 429}, sorted(set(statuses))
    accepted = [body for status, _, body in answers if status == 202]
    refused = [(headers, body) for status, headers, body in answers if status == 429]
    # The limit held: the minute's budget was used up and the rest refused. (The in-process
    # counter, without Redis, makes the lock of a key on its first use, so requests arriving
    # together at the very start may each pass with a lock of their own: a few over, never more.)
    assert STORM_LIMIT <= len(accepted) < STORM_LIMIT + STORM_THREADS, (len(accepted), len(refused))
    assert len(accepted) + len(refused) == STORM_POSTS
    for headers, body in refused:
        assert int(headers["Retry-After"]) >= 1 and body["error"].startswith("Too many requests")
    answered_ids = [run_id for body in accepted for run_id in body["runs"]]
    assert all(len(body["runs"]) == 1 and body["deduplicated"] == [] for body in accepted)
    stored_ids = list(PipelineRun.objects.filter(trigger="alert").values_list("pk", flat=True))
    # No run lost, none doubled: the runs answered are exactly the alert runs stored.
    assert len(answered_ids) == len(set(answered_ids)) == len(accepted)
    assert set(answered_ids) == set(stored_ids) and len(stored_ids) == len(accepted)
    # Refused posts recorded nothing: one alert per accepted post.
    assert Alert.objects.count() == len(accepted) == AlertDelivery.objects.count()
