"""The one place that knows how the project talks to an AMQP broker
(RabbitMQ) beyond what Celery does itself: run wake-ups and queue counts.

Wake-ups travel through one direct exchange, ``pipeline.run-events``, with a
run's channel name as the routing key. A watcher (``--wait``, ``--follow``, a
worker's heartbeat listening for cancel requests) declares a queue of its own
(server-named, exclusive: it goes away with its connection), binds it with
the channel of the run it watches and reads what arrives. A wake-up nobody
listens for is dropped by the exchange. Nothing here is durable: a wake-up is
a hint, the run's row the truth.

Queue counts come from a passive declare: how many messages are ready in a
queue, those delivered to a worker and not yet acknowledged aside. AMQP
cannot list a queue's messages without taking them, so the recovery sweep
works from these counts (apps/orchestration/dispatch.py).

``ERRORS`` holds what these raise when the broker cannot be reached or
refuses; every caller treats them as "no answer".
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import cast

import amqp
import kombu

EXCHANGE = "pipeline.run-events"
SCHEMES = ("amqp://", "amqps://", "pyamqp://")

# A wake-up or a queue count is a hint: fail fast rather than wait on an unreachable broker.
_CONNECT_TIMEOUT = 2.0
_IO_TIMEOUTS = {"read_timeout": 5, "write_timeout": 5}

ERRORS: tuple[type[BaseException], ...] = (
    *kombu.Connection("amqp://").connection_errors,
    *kombu.Connection("amqp://").channel_errors,
    OSError,
)


def is_amqp(url: str) -> bool:
    """Whether broker URL ``url`` names an AMQP broker."""
    return url.startswith(SCHEMES)


def _connection(url: str) -> kombu.Connection:
    """A connected kombu connection to ``url``; raises one of ERRORS."""
    connection = kombu.Connection(url, connect_timeout=_CONNECT_TIMEOUT, transport_options=_IO_TIMEOUTS)
    connection.connect()
    return connection


def _channel(connection: kombu.Connection) -> amqp.Channel:
    """A new channel of ``connection``: py-amqp's own (kombu's stubs know only its generic one)."""
    return cast(amqp.Channel, connection.channel())


def _queue_declare(channel: amqp.Channel, queue: str, **options) -> tuple[str, int, int]:
    """Declare ``queue`` (``options`` as py-amqp's queue_declare): its name, how many messages
    are ready in it and how many consumers it has."""
    declared = channel.queue_declare(queue, **options)
    if declared is None:  # only with nowait, which is never asked for here
        raise amqp.ChannelError(f"no answer to the declaration of queue {queue!r}")
    name, ready, consumers = declared
    return name, ready, consumers


def _declare_exchange(channel: amqp.Channel) -> None:
    channel.exchange_declare(EXCHANGE, "direct", durable=False, auto_delete=False)


class Publisher:
    """This process's connection for sending wake-ups, opened on first use and
    again after an error."""

    def __init__(self, url: str):
        self.url, self.pid = url, os.getpid()
        self._connection: kombu.Connection | None = None
        self._channel: amqp.Channel | None = None
        self.lock = threading.Lock()

    def publish(self, channel_name: str, message: str) -> None:
        """Send ``message`` to whoever watches ``channel_name``; raises one of ERRORS.

        A connection kept from an earlier publish may have been closed by the
        broker meanwhile (a restart, a forced close): the message then goes
        out on a new one."""
        with self.lock:
            kept = self._channel is not None
            try:
                self._send(channel_name, message)
            except ERRORS:
                self._drop()
                if not kept:
                    raise
                try:
                    self._send(channel_name, message)
                except BaseException:
                    self._drop()
                    raise
            except BaseException:
                self._drop()
                raise

    def _send(self, channel_name: str, message: str) -> None:
        channel = self._channel
        if channel is not None and self._connection is not None:
            # Whatever the broker sent on an idle connection is read first: a close (a restart, a
            # forced close) raises here rather than let the message go out on a dead socket.
            try:
                self._connection.drain_events(timeout=0)
            except TimeoutError:
                pass  # nothing to read: the connection is fine
        if channel is None:
            self._connection = _connection(self.url)
            channel = self._channel = _channel(self._connection)
            _declare_exchange(channel)
        channel.basic_publish(amqp.Message(message.encode(), content_type="text/plain"), EXCHANGE, channel_name)

    def _drop(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            try:
                connection.release()
            except ERRORS:
                pass


class Subscriber:
    """A queue of this process's own, bound to the channels it watches; reads
    like redis-py's PubSub (``subscribe``, ``get_message``, ``unsubscribe``,
    ``close``), so watchers need not know which broker carries their
    wake-ups. Raises one of ERRORS when the broker fails."""

    def __init__(self, url: str):
        self._connection = _connection(url)
        try:
            self._channel = _channel(self._connection)
            _declare_exchange(self._channel)
            self._queue, _, _ = _queue_declare(self._channel, "", exclusive=True, auto_delete=True)
            self._channel.basic_consume(self._queue, no_ack=True, callback=self._arrived)
        except BaseException:
            self.close()
            raise
        self._received: deque[dict] = deque()

    def _arrived(self, message) -> None:
        channel = message.delivery_info.get("routing_key", "")
        self._received.append({"type": "message", "channel": channel.encode(), "data": message.body})

    def subscribe(self, channel_name: str) -> None:
        self._channel.queue_bind(self._queue, EXCHANGE, channel_name)

    def unsubscribe(self, channel_name: str) -> None:
        self._channel.queue_unbind(self._queue, EXCHANGE, channel_name)
        self._received.clear()  # wake-ups of the run no longer watched

    def get_message(self, ignore_subscribe_messages: bool = True, timeout: float = 0.0) -> dict | None:
        """The next wake-up received, waiting up to ``timeout`` seconds; None when none came."""
        deadline = time.monotonic() + max(timeout, 0)
        while not self._received:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                self._connection.drain_events(timeout=remaining)
            except TimeoutError:
                return None
        return self._received.popleft()

    def close(self) -> None:
        try:
            self._connection.release()
        except ERRORS:
            pass


def queue_counts(url: str, queues) -> dict[str, int]:
    """How many messages are ready in each of ``queues`` (0 for a queue the
    broker does not have); raises one of ERRORS."""
    counts = {}
    with _connection(url) as connection:
        channel = _channel(connection)
        for queue in queues:
            try:
                _, counts[queue], _ = _queue_declare(channel, queue, passive=True)
            except amqp.NotFound:  # no such queue (yet): nothing waits in it
                counts[queue] = 0
                channel = _channel(connection)  # the broker closed the channel that asked
    return counts
