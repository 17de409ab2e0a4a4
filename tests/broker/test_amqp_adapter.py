"""The AMQP adapter against a real RabbitMQ, in a virtual host of the test's own."""
import subprocess
from urllib.parse import unquote

import kombu
import pytest

from apps.broker import amqp_adapter
from tests.support import (
    PROCESS_TIMEOUT,
    RABBITMQCTL,
    amqp_vhost_create,
    amqp_vhost_delete,
    require_rabbitmq,
    wait_for,
)


@pytest.fixture(scope="module")
def url():
    require_rabbitmq()
    vhost, url = amqp_vhost_create()
    try:
        yield url
    finally:
        amqp_vhost_delete(vhost)


def test_a_subscriber_hears_the_channels_it_is_bound_to_and_no_other(url):
    subscriber = amqp_adapter.Subscriber(url)
    publisher = amqp_adapter.Publisher(url)
    try:
        subscriber.subscribe("pipeline-run:0:1")
        publisher.publish("pipeline-run:0:2", "running")  # nobody listens: dropped by the exchange
        publisher.publish("pipeline-run:0:1", "completed")
        message = subscriber.get_message(timeout=30)
        assert message == {"type": "message", "channel": b"pipeline-run:0:1", "data": b"completed"}
        subscriber.unsubscribe("pipeline-run:0:1")
        publisher.publish("pipeline-run:0:1", "late")
        assert subscriber.get_message(timeout=0.2) is None
    finally:
        subscriber.close()
        publisher._drop()


def test_queue_counts_say_how_many_messages_are_ready_and_zero_for_a_queue_not_declared(url):
    with kombu.Connection(url) as connection:
        queue = kombu.Queue("counted", routing_key="counted")
        with connection.Producer() as producer:
            for number in range(3):
                producer.publish({"n": number}, routing_key="counted", declare=[queue])
    assert amqp_adapter.queue_counts(url, ["counted", "never-declared", "counted"]) == {
        "counted": 3, "never-declared": 0,
    }


def test_an_unreachable_broker_raises_one_of_the_adapters_errors():
    with pytest.raises(amqp_adapter.ERRORS):
        amqp_adapter.queue_counts("amqp://guest:guest@127.0.0.1:1//", ["celery"])
    with pytest.raises(amqp_adapter.ERRORS):
        amqp_adapter.Subscriber("amqp://guest:guest@127.0.0.1:1//")


def test_only_amqp_urls_are_taken_for_amqp():
    assert amqp_adapter.is_amqp("amqp://guest@127.0.0.1//") and amqp_adapter.is_amqp("amqps://h/v")
    assert not amqp_adapter.is_amqp("redis://127.0.0.1:6379/0")
    assert not amqp_adapter.is_amqp("redis+socket:///tmp/x.sock")


def test_a_publisher_whose_connection_the_broker_closed_sends_on_a_new_one(url):
    vhost = unquote(url.rsplit("/", 1)[1])
    publisher = amqp_adapter.Publisher(url)
    subscriber = None
    try:
        publisher.publish("pipeline-run:0:9", "first")  # connects; nobody listens
        done = subprocess.run([RABBITMQCTL, "close_all_connections", "-p", vhost, "closed by the test"],
                              capture_output=True, text=True, timeout=PROCESS_TIMEOUT)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: not _open_connections(vhost), what="the broker to close the vhost's connections")
        subscriber = amqp_adapter.Subscriber(url)
        subscriber.subscribe("pipeline-run:0:9")
        publisher.publish("pipeline-run:0:9", "second")
        assert subscriber.get_message(timeout=30)["data"] == b"second"
    finally:
        if subscriber is not None:
            subscriber.close()
        publisher._drop()


def _open_connections(vhost: str) -> int:
    done = subprocess.run([RABBITMQCTL, "list_connections", "-q", "--no-table-headers", "vhost"],
                          capture_output=True, text=True, timeout=PROCESS_TIMEOUT)
    return sum(1 for line in done.stdout.splitlines() if line.strip() == vhost)
