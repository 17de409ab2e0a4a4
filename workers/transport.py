"""kombu's Redis transport, with one client per connection pool.

kombu's Redis channel builds a new ``redis.Redis`` for every command it
sends outside its polling connection: twice to acknowledge a message and
once to publish one. Building one costs about 50 µs (redis-py fills in a
table of some 170 response callbacks each time), a visible part of what a
worker and a launcher spend per run. A ``redis.Redis`` holds no connection
of its own, only its pool, and is safe to share between threads, so this
channel keeps the one it built for as long as its pool lives.

Everything else is kombu's. ``workers/celery.py`` puts this transport under
the ``redis`` alias, so ``redis://`` and ``redis+socket://`` broker URLs
(the embedded broker's) use it; ``rediss://``, ``sentinel://`` and other
brokers keep kombu's own.
"""
from __future__ import annotations

from kombu.transport import redis as kombu_redis

ALIAS = "redis"
PATH = "workers.transport:Transport"


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


def register() -> None:
    """Make ``redis`` broker URLs use this transport in this process. Called
    before the app makes its first connection: kombu keeps the class an alias
    first resolved to."""
    from kombu import transport

    transport.TRANSPORT_ALIASES[ALIAS] = PATH
