"""kombu's Redis transport, with one client per connection pool, for the
app's connections.

kombu's Redis channel builds a new ``redis.Redis`` for every command it
sends outside its polling connection: twice to acknowledge a message and
once to publish one. Building one costs about 50 µs (redis-py fills in a
table of some 170 response callbacks each time), a visible part of what a
worker and a launcher spend per run. A ``redis.Redis`` holds no connection
of its own, only its pool, and is safe to share between threads, so this
channel keeps the one it built for as long as its pool lives.

Everything else is kombu's. The app (workers/celery.py) makes its
connections through ``AMQP.Connection``, which takes this transport where
kombu would take its Redis one (``redis://``, ``rediss://`` and the embedded
broker's ``redis+socket://``); other brokers, and kombu connections made
outside the app, are left as they are.
"""
from __future__ import annotations

import kombu
from celery.app import amqp
from kombu import connection as kombu_connection
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client = None

    def _create_client(self, asynchronous=False):
        if asynchronous:  # the polling connection's client: kombu keeps it already
            return super()._create_client(asynchronous=True)
        client = self._shared_client
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()
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


class _PooledConnection(kombu_connection.PooledConnection, Connection):
    pass


class _ConnectionPool(kombu_connection.ConnectionPool):
    def new(self):
        # As kombu's ConnectionPool.new, with the pooled copy of this module's class.
        return _PooledConnection(self, **dict(self.connection._info(resolve=False)))


class AMQP(amqp.AMQP):
    Connection = Connection
