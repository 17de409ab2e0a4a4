"""Wake-ups and progress events published for watchers of a run
(apps/orchestration/events.py), on a private embedded broker: a real Redis
server that these tests may restart and kill without touching anyone else's."""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import pytest
from django.db import connection
from django.db.models.functions import Now

from apps.broker.embedded import EmbeddedBroker
from apps.orchestration import engine, events
from apps.orchestration.models import PipelineRun
from tests.support import make_run, wait_for

RUN_ID = 7


@pytest.fixture
def broker(settings):
    # Short path under /tmp: unix socket paths are limited to ~107 bytes.
    directory = tempfile.mkdtemp(prefix="ev", dir="/tmp")
    embedded = EmbeddedBroker(Path(directory))
    embedded.ensure_running()
    settings.CELERY_BROKER_URL = embedded.url
    try:
        yield embedded
    finally:
        try:
            embedded.stop()
        finally:
            shutil.rmtree(directory, ignore_errors=True)


class Subscriber:
    """A subscriber to one run's channel on the broker."""

    def __init__(self, broker: EmbeddedBroker, run_id: int):
        self.client = broker.client(socket_timeout=10)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(events.channel_name(run_id))
        self.messages = 0  # pub/sub messages, each carrying one or more events

    def received(self, count: int, timeout: float = 60) -> list:
        """The next events, up to ``count``: statuses as they are, progress events as (phase, node, attempt)."""
        received, deadline = [], time.monotonic() + timeout
        while len(received) < count and time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=0.1)
            if message is not None:
                self.messages += 1
                for text in message["data"].decode().split("\n"):
                    step = events.progress_event(text)
                    received.append(text if step is None else (step["phase"], step["node"], step.get("attempt")))
        return received

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


@pytest.fixture
def listener(broker):
    subscriber = Subscriber(broker, RUN_ID)
    try:
        yield subscriber
    finally:
        subscriber.close()


def test_status_and_progress_events_reach_a_subscriber_in_order(broker, listener, apps_log):
    events.run_event_publish(run_id=RUN_ID, status="running")
    events.progress_publish(run_id=RUN_ID, event={"phase": "start", "node": "a"})
    events.run_event_publish(run_id=RUN_ID, status="completed")

    assert listener.received(3) == ["running", ("start", "a", None), "completed"]
    assert "could not publish" not in apps_log.text


def test_a_publish_after_the_server_dropped_the_connection_arrives(broker, listener, apps_log):
    events.run_event_publish(run_id=RUN_ID, status="running")
    assert listener.received(1) == ["running"]
    admin = broker.client()
    # Every plain connection but this one: the publisher's (the listener's is a pub/sub one).
    assert admin.client_kill_filter(_type="normal", skipme=True) >= 1

    events.run_event_publish(run_id=RUN_ID, status="completed")

    assert listener.received(1) == ["completed"]
    assert "could not publish" not in apps_log.text


def test_a_publish_to_a_dead_broker_is_only_logged_and_the_next_one_reconnects(broker, apps_log):
    events.run_event_publish(run_id=RUN_ID, status="running")
    # Killed outright, the server leaves its socket file behind: the publish is tried and fails.
    pid = broker.pid()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: broker.pid() is None, what="the killed broker to be gone")
    assert broker.socket_path.exists()

    events.run_event_publish(run_id=RUN_ID, status="completed")  # must not raise
    assert f"could not publish status of run {RUN_ID}" in apps_log.text

    broker.ensure_running()
    subscriber = Subscriber(broker, RUN_ID)
    try:
        events.run_event_publish(run_id=RUN_ID, status="failed")
        assert subscriber.received(1) == ["failed"]
    finally:
        subscriber.close()


def test_a_forked_child_publishes_on_a_connection_of_its_own(broker, listener):
    events.run_event_publish(run_id=RUN_ID, status="running")  # the parent's connection is open
    assert listener.received(1) == ["running"]
    published_r, published_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: publish, say so, and stay connected until told to go
        try:
            events.run_event_publish(run_id=RUN_ID, status="from-child")
            os.write(published_w, b"1")
            os.read(go_r, 1)
        finally:
            os._exit(0)
    try:
        assert os.read(published_r, 1) == b"1"
        assert listener.received(1) == ["from-child"]
        # The server saw the child's PUBLISH on a connection other than the parent's.
        publishers = [c for c in broker.client().client_list() if c["cmd"] == "publish"]
        assert len(publishers) == 2
        # And the parent's connection still works as its own.
        events.run_event_publish(run_id=RUN_ID, status="from-parent")
        assert listener.received(1) == ["from-parent"]
    finally:
        os.write(go_w, b"1")
        _, status = os.waitpid(pid, 0)
        for fd in (published_r, published_w, go_r, go_w):
            os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0


# --- the events of a run the engine executes -------------------------------------------------


@pytest.mark.django_db
def test_a_run_publishes_each_node_start_and_end_in_order_and_its_status_last(broker):
    run = make_run(
        [
            {"id": "a", "type": "transform", "config": {"mapping": {"x": "payload.x"}}, "next": "b"},
            {"id": "b", "type": "transform", "config": {"mapping": {"y": "payload.missing"}}},
        ],
        name="events", payload={"x": 1}, defaults={"max_retries": 1},
    )
    subscriber = Subscriber(broker, run.pk)
    try:
        assert engine.run_execute(run_id=run.pk).status == "failed"
        # Each of the run's publishes was answered before run_execute returned, so a marker published
        # now comes after all of them: what arrives before it is everything the run published.
        subscriber.client.publish(events.channel_name(run.pk), "marker")
        assert subscriber.received(9) == [
            "running",
            ("start", "a", 1), ("end", "a", 1),
            ("start", "b", 1), ("end", "b", 1),
            ("start", "b", 2), ("end", "b", 2),
            "failed",
            "marker",
        ]
        # One message per node boundary: each carries what ended and what starts there (and the marker's).
        assert subscriber.messages == 4 + 1
    finally:
        subscriber.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("meanwhile", ["lost", "cancelled"])
def test_a_node_end_is_published_when_the_write_after_it_does_not_happen(broker, http_server, monkeypatch, meanwhile):
    # The first node waits on the server until released; meanwhile the run is taken over or cancelled.
    http_server.slow = True
    http_server.hold_seconds = 120
    monkeypatch.setenv("EVENTS_TEST_HOOK", http_server.url("/hook"))
    run = make_run([
        {"id": "hook", "type": "notify", "config": {"driver": "webhook", "url_env": "EVENTS_TEST_HOOK"}, "next": "b"},
        {"id": "b", "type": "transform", "config": {"mapping": {"x": "payload.x"}}},
    ], name="events", payload={"x": 1})
    subscriber = Subscriber(broker, run.pk)
    executed = {}

    def execute():
        try:
            executed["run"] = engine.run_execute(run_id=run.pk)
        finally:
            connection.close()

    thread = threading.Thread(target=execute)
    thread.start()
    try:
        wait_for(lambda: http_server.requests, what="the node's request")
        if meanwhile == "lost":
            PipelineRun.objects.filter(pk=run.pk).update(claimed_by="another-host:1:x")
        else:
            PipelineRun.objects.filter(pk=run.pk).update(cancel_requested_at=Now())
        http_server.release.set()
        thread.join(30)
        assert not thread.is_alive()
        received = subscriber.received(5, timeout=2)
    finally:
        http_server.release.set()
        thread.join(30)
        subscriber.close()
    if meanwhile == "lost":
        assert executed["run"].ended_here is False
        assert received == ["running", ("start", "hook", 1), ("end", "hook", 1)]
    else:
        assert executed["run"].status == "cancelled"
        assert received == ["running", ("start", "hook", 1), ("end", "hook", 1), "cancelled"]
