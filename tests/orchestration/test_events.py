"""Wake-ups and progress events published for watchers of a run
(apps/orchestration/events.py), on a private embedded broker: a real Redis
server that these tests may restart and kill without touching anyone else's."""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from apps.orchestration import events
from workers.embedded import EmbeddedBroker

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


@pytest.fixture
def listener(broker):
    """A subscriber to RUN_ID's channel on the broker; ``received(n)`` returns the next n messages."""
    client = broker.client(socket_timeout=10)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(events.channel_name(RUN_ID))

    class Listener:
        @staticmethod
        def received(count: int, timeout: float = 5) -> list[str]:
            messages, deadline = [], time.monotonic() + timeout
            while len(messages) < count and time.monotonic() < deadline:
                message = pubsub.get_message(timeout=0.1)
                if message is not None:
                    messages.append(message["data"].decode())
            return messages

    try:
        yield Listener
    finally:
        pubsub.close()
        client.close()


def test_status_and_progress_events_reach_a_subscriber_in_order(broker, listener, apps_log):
    events.run_event_publish(run_id=RUN_ID, status="running")
    events.progress_publish(run_id=RUN_ID, event={"phase": "start", "node": "a"})
    events.run_event_publish(run_id=RUN_ID, status="completed")

    received = listener.received(3)
    assert received[0] == "running"
    assert events.progress_event(received[1]) == {"phase": "start", "node": "a"}
    assert received[2] == "completed"
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
    deadline = time.monotonic() + 10
    while broker.pid() is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert broker.socket_path.exists()

    events.run_event_publish(run_id=RUN_ID, status="completed")  # must not raise
    assert f"could not publish status of run {RUN_ID}" in apps_log.text

    broker.ensure_running()
    client = broker.client(socket_timeout=10)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(events.channel_name(RUN_ID))
    try:
        events.run_event_publish(run_id=RUN_ID, status="failed")
        message = None
        deadline = time.monotonic() + 5
        while message is None and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.1)
        assert message is not None and message["data"] == b"failed"
    finally:
        pubsub.close()
        client.close()


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
