"""The Redis transport the app uses (apps/broker/redis_adapter.py), on a real broker."""
from pathlib import Path

from kombu import Connection

from apps.broker import redis_adapter as transport
from apps.broker.embedded import EmbeddedBroker
from workers.celery import app


def _url(broker) -> str:
    if broker.kind == "embedded":
        embedded = EmbeddedBroker(Path(broker.env["EMBEDDED_BROKER_DIR"]))
        assert embedded.ensure_running()
        return embedded.url
    return broker.url


def test_the_app_sends_and_acknowledges_through_one_client_per_pool(broker):
    with app.connection_for_write(_url(broker)) as conn:
        channel = conn.default_channel
        assert isinstance(channel, transport.Channel)
        queue = conn.SimpleQueue("transport-test")
        try:
            for n in range(3):
                queue.put({"n": n})
            got = []
            for _ in range(3):
                message = queue.get(timeout=30)
                got.append(message.payload["n"])
                message.ack()
            assert got == [0, 1, 2]
            client = channel._create_client()
            assert channel._create_client() is client
            # Acknowledged: nothing is left for kombu's restore of unacked messages.
            assert client.hlen(channel.unacked_key) == 0
            assert client.llen("transport-test") == 0
        finally:
            queue.close()


def test_other_brokers_and_other_connections_keep_kombus_own_transport():
    from kombu.transport import redis as kombu_redis

    # Building a connection's transport connects to nothing.
    for url in ("redis://127.0.0.1:1/0", "rediss://127.0.0.1:1/0", "redis+socket:///tmp/x.sock"):
        assert app.connection_for_write(url).transport.Channel is transport.Channel, url
        assert app.connection_for_write(url).clone().transport.Channel is transport.Channel, url
        with app.connection_for_write(url).Pool(limit=1).acquire() as pooled:
            assert pooled.transport.Channel is transport.Channel, url
        assert Connection(url).transport.Channel is kombu_redis.Channel, url
    assert type(app.connection_for_write("amqp://127.0.0.1:1//").transport).__module__ == "kombu.transport.pyamqp"
