"""The one place that knows kombu's and redis-py's internals.

- kombu's Redis transport, with one client per connection pool, for the
  app's connections (``AMQP``, named by apps/broker/app.py);
- where kombu's Redis transport keeps a queue's messages (``queue_keys``);
- a redis-py client for the broker's URL (``client_for``), and a PUBLISH
  straight through one redis-py Connection (``Publisher``).

tests/broker/test_redis_adapter.py fails loudly when a kombu or redis-py
upgrade changes what these rely on.

The transport:

kombu's Redis channel builds a new ``redis.Redis`` for every command it
sends outside its polling connection: twice to acknowledge a message and
once to publish one. Building one costs about 50 µs (redis-py fills in a
table of some 170 response callbacks each time), a visible part of what a
worker and a launcher spend per run. A ``redis.Redis`` holds no connection
of its own, only its pool, and is safe to share between threads, so this
channel keeps the one it built for as long as its pool lives. Asked for a
client after its transport was closed (a worker closing the connection to a
broker that went away), it raises a connection error where kombu would fail
with an AttributeError that stopped the worker.

Everything else is kombu's. The app (apps/broker/app.py) makes its
connections through ``AMQP.Connection``, which takes this transport where
kombu would take its Redis one (``redis://``, ``rediss://`` and the embedded
broker's ``redis+socket://``); other brokers, and kombu connections made
outside the app, are left as they are.
"""
from __future__ import annotations

import os
import re
import threading
from functools import lru_cache
from typing import TypedDict

import kombu
import redis
from celery.app import amqp
from kombu import connection as kombu_connection
from kombu.transport import redis as kombu_redis
from redis.backoff import NoBackoff
from redis.retry import Retry


class Channel(kombu_redis.Channel):
    _shared_client = None

    # kombu's private _create_client is missing from its stubs, hence the two ignores.
    def _create_client(self, asynchronous=False):
        if self.connection.client is None:
            # The transport was closed under this channel (a broker that went away), and kombu
            # asks for a client to hand unacknowledged messages back while it closes the channel.
            # Its pool would fail on the missing connection with an AttributeError, which nothing
            # catches and which stopped the worker; a connection error is what the close ignores,
            # and the consumer reconnects. The messages stay in kombu's unacked set, which the
            # transport restores after its visibility timeout; the recovery sweep sends their
            # runs again sooner (a run is claimed once, whichever message arrives first).
            raise redis.exceptions.ConnectionError("the connection to the broker is closed")
        if asynchronous:  # the polling connection's client: kombu keeps it already
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        client = self._shared_client
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()  # type: ignore[misc]
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


class Connection(kombu.Connection):
    """kombu's connection, taking this transport for kombu's Redis one; its
    clones and pooled copies (the app's producer pool) do the same."""

    def get_transport_cls(self):
        cls = super().get_transport_cls()
        return Transport if cls is kombu_redis.Transport else cls

    def Pool(self, limit=None, **kwargs):
        return _ConnectionPool(self, limit=limit, **kwargs)


# The stubs declare PooledConnection apart from Connection (kombu derives it from Connection).
class _PooledConnection(kombu_connection.PooledConnection, Connection):  # type: ignore[misc]
    pass


class _ConnectionPool(kombu_connection.ConnectionPool):
    def new(self):
        # As kombu's ConnectionPool.new, with the pooled copy of this module's class.
        return _PooledConnection(self, **dict(self.connection._info(resolve=False)))


class AMQP(amqp.AMQP):
    Connection = Connection


def queue_keys(queue: str) -> list[str]:
    """The Redis lists kombu's transport keeps ``queue``'s messages in, one
    per priority step (the queue's own name for priority 0)."""
    channel = kombu_redis.Channel
    return [queue if step == 0 else f"{queue}{channel.sep}{step}" for step in channel.priority_steps]


# A task id in a message as kombu's Redis transport stores it: the "id" of its headers, in a JSON
# object written by json.dumps (the body is base64, so nothing in it matches). A quote inside a
# JSON string is escaped (\"), so no header's value can hold this; the first match is the id.
_TASK_ID = re.compile(rb'"id": ?"([^"\\]{1,200})"')


def message_task_id(raw: bytes) -> str | None:
    """The task id of ``raw``, a message as it waits in one of kombu's Redis
    lists, found without decoding the message; None when it has none."""
    match = _TASK_ID.search(raw)
    return match.group(1).decode("ascii", "replace") if match else None


class _ClientOptions(TypedDict):
    socket_timeout: float
    socket_connect_timeout: float
    retry: Retry


# A wake-up or a look into the queues is a hint: fail fast instead of retrying.
_FAST: _ClientOptions = {"socket_timeout": 5, "socket_connect_timeout": 2, "retry": Retry(NoBackoff(), 0)}
SOCKET_SCHEME = "redis+socket://"


@lru_cache(maxsize=4)
def client_for(url: str) -> redis.Redis | None:
    """A client of the Redis server at broker URL ``url`` (fails fast, no
    retries), or None when the broker is not Redis."""
    if url.startswith(SOCKET_SCHEME):
        return redis.Redis(unix_socket_path=socket_path(url), **_FAST)
    if url.startswith(("redis://", "rediss://")):
        return redis.Redis.from_url(url, **_FAST)
    return None


def socket_path(url: str) -> str:
    """The unix socket of a ``redis+socket://`` broker URL."""
    return url[len(SOCKET_SCHEME):].split("?")[0]


def client_db(client: redis.Redis) -> int:
    """The Redis database ``client`` works in."""
    return client.connection_pool.connection_kwargs.get("db", 0)


class Publisher:
    """This process's own connection to a Redis server, for PUBLISH only.

    A publish goes straight through one redis-py Connection: going through
    the client (its pool, retry and instrumentation layers) about doubles its
    CPU, and a worker publishes at every node boundary. Made with the
    client's connection settings (fast timeouts, no retries)."""

    def __init__(self, client: redis.Redis):
        pool = client.connection_pool
        self.client, self.pid = client, os.getpid()
        self.connection = pool.connection_class(**pool.connection_kwargs)
        self.lock = threading.Lock()  # one command and its reply at a time on the socket

    def publish(self, channel: str, message: str) -> None:
        """Publish ``message`` on ``channel``; raises redis.RedisError."""
        connection = self.connection
        with self.lock:
            try:
                connection.connect()  # a no-op once connected; connects again after an error
                # Something to read on an idle connection means the server closed it (a restart,
                # its idle timeout): start a new one, as redis-py's pool does before each command.
                try:
                    stale = connection.can_read(timeout=0)
                except redis.ConnectionError:
                    stale = True
                if stale:
                    connection.disconnect()
                    connection.connect()
                connection.send_packed_command(connection.pack_command("PUBLISH", channel, message), check_health=False)
                connection.read_response()
            except BaseException:
                # A reply left unread would be taken for the next command's.
                connection.disconnect()
                raise
