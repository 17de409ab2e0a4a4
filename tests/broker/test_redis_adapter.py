"""What the Redis adapter relies on in kombu and redis-py. Each of these is
an internal of theirs: an upgrade that changes one fails here, by name,
before it can fail in a worker."""
import inspect
import shutil
import tempfile
from pathlib import Path

import kombu
import pytest
import redis
from kombu import connection as kombu_connection
from kombu.transport import redis as kombu_redis

from apps.broker import redis_adapter


def test_kombus_redis_channel_still_builds_its_clients_where_the_adapter_overrides_it():
    create = getattr(kombu_redis.Channel, "_create_client", None)
    assert callable(create), "kombu's Redis Channel no longer has _create_client"
    assert "asynchronous" in inspect.signature(create).parameters
    assert issubclass(redis_adapter.Channel, kombu_redis.Channel)


def test_kombus_connection_pool_still_copies_a_connection_from_its_info():
    assert callable(getattr(kombu_connection.ConnectionPool, "new", None))
    info = kombu.Connection("redis://127.0.0.1:1/0")._info(resolve=False)
    assert dict(info)["hostname"] == "127.0.0.1"


def test_queue_keys_are_where_kombu_keeps_each_priority():
    channel = kombu_redis.Channel.__new__(kombu_redis.Channel)  # no connection: only its key layout is read
    expected = [channel._q_for_pri("q", step) for step in kombu_redis.Channel.priority_steps]
    assert redis_adapter.queue_keys("q") == expected
    assert expected[0] == "q" and len(set(expected)) == len(expected)


def test_redis_py_connections_still_offer_what_the_publisher_drives():
    client = redis.Redis(host="127.0.0.1", port=1)
    pool = client.connection_pool
    connection = pool.connection_class(**pool.connection_kwargs)
    for name in ("connect", "can_read", "send_packed_command", "pack_command", "read_response", "disconnect"):
        assert callable(getattr(connection, name, None)), f"redis-py Connection has no {name}"
    assert "check_health" in inspect.signature(connection.send_packed_command).parameters
    publisher = redis_adapter.Publisher(client)
    assert publisher.connection.port == 1  # made, not connected


def test_client_for_knows_the_broker_urls():
    assert redis_adapter.client_for("amqp://guest@127.0.0.1//") is None
    socket_client = redis_adapter.client_for("redis+socket:///tmp/x/redis.sock?virtual_host=0")
    assert socket_client.connection_pool.connection_kwargs["path"] == "/tmp/x/redis.sock"
    assert redis_adapter.client_db(redis_adapter.client_for("redis://127.0.0.1:6379/7")) == 7


def test_a_channel_closed_after_its_transport_gives_back_nothing_and_raises_nothing_a_worker_would_die_of():
    """A worker whose broker went away closes its connection; when kombu closes a channel whose
    transport was already closed, with a message delivered and not acknowledged, the adapter says
    the broker is unreachable (which the close ignores, and the consumer reconnects) instead of
    kombu's pool failing with an AttributeError, which stopped the worker."""
    from apps.broker.embedded import EmbeddedBroker

    folder = tempfile.mkdtemp(prefix="eb", dir="/tmp")  # a short socket path
    broker = EmbeddedBroker(Path(folder))
    broker.ensure_running()
    try:
        connection = redis_adapter.Connection(broker.url)
        queue = kombu.Queue("held", routing_key="held")
        with connection.Producer() as producer:
            producer.publish({"n": 1}, routing_key="held", declare=[queue])
        channel = connection.default_channel
        assert channel.basic_get("held", no_ack=False) is not None  # delivered, not acknowledged
        broker.stop()
        channel.connection.client = None  # as kombu's Connection leaves a transport it closed
        with pytest.raises(redis.exceptions.ConnectionError, match="the connection to the broker is closed"):
            channel._create_client()
        connection.close()  # kombu's close ignores the connection error: nothing escapes
    finally:
        broker.stop()
        shutil.rmtree(folder, ignore_errors=True)
