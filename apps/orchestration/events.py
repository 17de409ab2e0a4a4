"""Wake-ups for processes watching a run.

The PipelineRun row is the truth; these events only tell a waiting CLI when
to read it again, so it need not poll the database. They travel over the
broker, on one channel per run: Redis pub/sub when the broker is Redis (the
embedded broker included), a direct exchange when it is AMQP (RabbitMQ; see
apps/broker/amqp_adapter.py). With any other broker there is no event
channel and watchers fall back to polling the row.

One message may carry several events, one per line (status words and
compact JSON hold no line break): a worker sends what it queued at a node
boundary as one message.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from django.conf import settings

from apps.broker import amqp_adapter, redis_adapter

logger = logging.getLogger("apps.orchestration.events")

# What the wake-up side of either broker raises when it cannot be reached or refuses.
ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, *amqp_adapter.ERRORS)


def channel_name(run_id: int, *, db: int | None = None) -> str:
    """The wake-up channel of ``run_id``. Redis pub/sub channels are shared by
    every database of a server, so the name carries the broker's database
    (``db``, default: the configured broker's) to keep deployments apart; an
    AMQP exchange belongs to one virtual host, which does the same there."""
    if db is None:
        client = _client()
        db = redis_adapter.client_db(client) if client is not None else 0
    return f"pipeline-run:{db}:{run_id}"


def _client() -> redis.Redis | None:
    return redis_adapter.client_for(settings.CELERY_BROKER_URL)


def _reachable() -> bool:
    """False when the broker is a unix socket that does not exist (an inline
    run with no broker started): nobody can be waiting, so do not try."""
    url = settings.CELERY_BROKER_URL
    return not url.startswith(redis_adapter.SOCKET_SCHEME) or os.path.exists(redis_adapter.socket_path(url))


def broker_client() -> redis.Redis | None:
    """A client of the broker's Redis (fails fast, no retries), or None when
    the broker is not Redis or is an embedded one that is not running."""
    client = _client()
    return client if client is not None and _reachable() else None


def has_channel() -> bool:
    """Whether watchers can be woken up (otherwise they poll)."""
    return _client() is not None or amqp_adapter.is_amqp(settings.CELERY_BROKER_URL)


def _can_send() -> bool:
    """Whether wake-ups can be sent now (a channel, on a broker that may be running)."""
    return has_channel() and _reachable()


_publisher: redis_adapter.Publisher | amqp_adapter.Publisher | None = None


def _publisher_now() -> redis_adapter.Publisher | amqp_adapter.Publisher:
    """This process's publisher for the configured broker: a forked child makes
    its own rather than share its parent's socket."""
    global _publisher
    publisher, url = _publisher, settings.CELERY_BROKER_URL
    client = _client()
    if client is not None:
        if not isinstance(publisher, redis_adapter.Publisher) or publisher.pid != os.getpid() or (
            publisher.client is not client
        ):
            publisher = _publisher = redis_adapter.Publisher(client)
    elif not isinstance(publisher, amqp_adapter.Publisher) or publisher.pid != os.getpid() or publisher.url != url:
        publisher = _publisher = amqp_adapter.Publisher(url)
    return publisher


def _subscriber():
    """A new subscriber on the configured broker (redis-py's PubSub, or its
    AMQP counterpart); raises one of ERRORS."""
    client = _client()
    return client.pubsub() if client is not None else amqp_adapter.Subscriber(settings.CELERY_BROKER_URL)


def _publish(run_id: int, message: str, what: str) -> None:
    if not _can_send():
        return
    try:
        _publisher_now().publish(channel_name(run_id), message)
    except ERRORS as exc:
        # Watchers re-read the row on their own schedule; a lost wake-up only delays them.
        logger.warning("could not publish %s of run %s: %s", what, run_id, exc)


def run_event_publish(*, run_id: int, status: str) -> None:
    """Tell watchers of ``run_id`` that it moved to ``status``; never raises."""
    _publish(run_id, status, "status")


# Progress events (a node started or ended, a takeover) travel on the same
# channel as status wake-ups, as this prefix and a JSON object.
PROGRESS_PREFIX = "progress "


def progress_publish(*, run_id: int, event: dict) -> None:
    """Tell followers of ``run_id`` about progress (``event``: a JSON-able dict
    with ``phase`` "start", "end" or "takeover"); never raises."""
    if has_channel():
        _publish(run_id, PROGRESS_PREFIX + json.dumps(event, default=str), "progress")


class RunEvents:
    """Status and progress events of one run, queued, then published together
    by ``send`` in the order they were queued: one round trip for several."""

    def __init__(self, *, run_id: int):
        self.run_id = run_id
        self._queued: list[str] = []
        self._kinds: set[str] = set()

    def status(self, status: str) -> None:
        """Queue a status wake-up (see run_event_publish)."""
        self._queued.append(status)
        self._kinds.add("status")

    def progress(self, event: dict) -> None:
        """Queue a progress event (see progress_publish)."""
        if has_channel():  # no JSON for nobody
            self._queued.append(PROGRESS_PREFIX + json.dumps(event, default=str))
            self._kinds.add("progress")

    def send(self) -> None:
        """Publish what is queued, in order, as one message; never raises."""
        if not self._queued:
            return
        events, kinds = self._queued, self._kinds
        self._queued, self._kinds = [], set()
        what = " and ".join(k for k in ("status", "progress") if k in kinds)
        _publish(self.run_id, "\n".join(events), what)


def progress_event(message: str | None) -> dict | None:
    """The progress event a message carries, or None when it is not one."""
    if not message or not message.startswith(PROGRESS_PREFIX):
        return None
    try:
        event = json.loads(message[len(PROGRESS_PREFIX):])
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


class _Subscription:
    def __init__(self, pubsub, channel: str):
        self._pubsub = pubsub
        self._channel = channel.encode()
        self._pending: deque[str] = deque()  # the rest of a message that carried several events

    @property
    def usable(self) -> bool:
        return self._pubsub is not None

    def wait(self, timeout: float, *, stop=None) -> str | None:
        """The next event published for the run, or None after ``timeout``
        seconds, or within about a second of ``stop`` (a threading.Event) being set."""
        if self._pending:
            return self._pending.popleft()
        deadline = time.monotonic() + max(timeout, 0)
        while True:
            remaining = deadline - time.monotonic()
            if stop is not None and stop.is_set():
                return None
            if self._pubsub is None:
                if remaining > 0:
                    if stop is not None:
                        stop.wait(remaining)
                    else:
                        time.sleep(remaining)
                return None
            slice_ = min(remaining, 1.0) if stop is not None else remaining
            try:
                message = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=max(slice_, 0))
            except ERRORS:
                self._pubsub = None  # fall back to sleeping; the caller polls the row
                continue
            if message is not None and message.get("channel") in (self._channel, self._channel.decode()):
                data = message["data"]
                first, *rest = (data.decode() if isinstance(data, bytes) else str(data)).split("\n")
                self._pending.extend(rest)
                return first
            if remaining <= 0:
                return None


# Subscriptions kept open between runs of this process (a worker's pool process
# watches one run after another): a new connection per run costs more than the run's
# own wake-ups. Keyed by pid (a forked child never uses its parent's sockets) and broker.
_SPARE_LIMIT = 2
_spare: list[tuple[int, str, object]] = []
_spare_lock = threading.Lock()


def _take_spare():
    with _spare_lock:
        while _spare:
            pid, url, pubsub = _spare.pop()
            if pid == os.getpid() and url == settings.CELERY_BROKER_URL:
                return pubsub
    return None


def _give_back(pubsub, channel: str) -> None:
    try:
        pubsub.unsubscribe(channel)
    except ERRORS:
        _close(pubsub)
        return
    with _spare_lock:
        if len(_spare) < _SPARE_LIMIT:
            _spare.append((os.getpid(), settings.CELERY_BROKER_URL, pubsub))
            return
    _close(pubsub)


def _close(pubsub) -> None:
    try:
        pubsub.close()
    except ERRORS:
        pass


@contextmanager
def run_events(*, run_id: int) -> Iterator[_Subscription]:
    """Subscribe to ``run_id``'s events; subscribe before reading the row so no event is missed."""
    channel = channel_name(run_id)
    pubsub = None
    if _can_send():
        spare = _take_spare()
        # A spare kept idle may have been closed by the broker meanwhile: then a new one is tried.
        for kept in (spare, None) if spare is not None else (None,):
            try:
                pubsub = kept or _subscriber()
                pubsub.subscribe(channel)
                break
            except ERRORS as exc:
                if pubsub is not None:
                    _close(pubsub)
                pubsub = None
                if kept is None:
                    logger.warning("could not subscribe to run %s events: %s", run_id, exc)
    subscription = _Subscription(pubsub, channel)
    try:
        yield subscription
    finally:
        if subscription.usable:
            _give_back(pubsub, channel)
        elif pubsub is not None:
            _close(pubsub)
