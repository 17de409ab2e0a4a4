"""The broker side of runs: sending a run's wake-up message, and looking at
what the broker holds.

A message only tells a worker "look at run N"; the PipelineRun row says what
to do. Every message of a run carries a task id ``run-<run id>-<random>``,
so on Redis the recovery sweep can tell which runs have a message waiting in
a queue without decoding message bodies. An AMQP broker shows only how many
messages wait in a queue (``queue_counts``).
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import redis
from django.conf import settings

from apps.broker import amqp_adapter, redis_adapter
from apps.broker.app import app
from apps.broker.embedded import EmbeddedBrokerError, ensure_broker
from apps.broker.names import ENV_MISSING_COMMAND, EXECUTE_RUN_TASK
from apps.hostnames import QUEUE_PREFIX, host_queue
from apps.orchestration import events
from apps.orchestration.launchrequest import LaunchError, Refusal

logger = logging.getLogger("apps.orchestration.dispatch")

_TASK_ID_PREFIX = "run-"


def broker_ready() -> None:
    """Start the embedded broker when it is the one in use and nobody has;
    LaunchError (UNAVAILABLE) when it cannot be used."""
    try:
        ensure_broker()
    except EmbeddedBrokerError as exc:
        raise LaunchError(str(exc), Refusal.UNAVAILABLE) from exc


def run_queue(host: str | None = None) -> str:
    """The queue of runs for ``host`` (its host queue), or the shared queue
    every worker consumes when ``host`` is empty."""
    return host_queue(host) if host else app.conf.task_default_queue


def run_publish(
    *, run_id: int, definition: str | None = None, trace_id: str | None = None, host: str | None = None,
    producer=None,
) -> None:
    """Send run ``run_id``'s wake-up message to the workers: those serving
    ``host``, or any worker when ``host`` is empty.

    ``definition`` (the run's origin: a definition name, a config path or
    "builtin") and ``trace_id`` travel as keyword arguments only so that
    Flower and ``celery inspect`` show which run a task is; the worker reads
    the run from its row, never from them. Raises whatever kombu raises when
    the broker does not take it. ``producer``: a kombu Producer of the app
    to send it through (runs_publish's), else one from the app's pool."""
    labels = {key: value for key, value in (("definition", definition), ("trace_id", trace_id)) if value}
    app.send_task(
        EXECUTE_RUN_TASK, args=[run_id], kwargs=labels, task_id=f"{_TASK_ID_PREFIX}{run_id}-{uuid.uuid4().hex[:12]}",
        queue=run_queue(host),
        # What Flower shows, written here: Celery's size-bounded repr of any value cost more than the rest of
        # the message.
        argsrepr=f"[{run_id}]", kwargsrepr=repr(labels), producer=producer,
    )


def runs_publish(runs) -> None:
    """Send the wake-up messages of ``runs`` (PipelineRun rows: their pk,
    origin, trace id and target host), in order, through one producer
    connection, in batches: on Redis each batch is one round trip (kombu's
    Producer.batch; a broker without batches takes them one by one).

    Raises what kombu raises when the broker does not take them; then which
    of them reached it is not known (a batch's round trip may have failed
    halfway), so the caller treats every one as unsent: a duplicate message
    is harmless, the claim drops it."""
    with app.producer_or_acquire() as producer, producer.batch():
        for run in runs:
            run_publish(
                run_id=run.pk, definition=run.origin, trace_id=run.trace_id, host=run.target_host, producer=producer
            )


def _run_id_of(raw: bytes) -> int | None:
    """The run id a queued message is for, or None for any other message."""
    task_id = redis_adapter.message_task_id(raw)
    if task_id is None or not task_id.startswith(_TASK_ID_PREFIX):
        return None
    number = task_id[len(_TASK_ID_PREFIX):].partition("-")[0]
    return int(number) if number.isdigit() else None


def _on_queue_keys(queues, command: str, *args) -> list | None:
    """Run one Redis list command on each key (one per priority) of each of
    ``queues``, in one round trip; None when the broker cannot be looked
    into (not Redis, or unreachable)."""
    client = events.broker_client()
    if client is None:
        return None
    try:
        with client.pipeline(transaction=False) as pipe:
            for queue in queues:
                for key in redis_adapter.queue_keys(queue):
                    getattr(pipe, command)(key, *args)
            return pipe.execute()
    except redis.RedisError as exc:
        logger.warning("could not look into the run queues: %s", exc)
        return None


def queued_run_ids(*, hosts=(None,)) -> set[int] | None:
    """Ids of the runs that have a message waiting in the queues of
    ``hosts`` (None or "" stands for the shared queue; by default only it).

    Messages a worker has already taken are not counted: a run whose worker
    took its message and died before claiming it needs a new one. None when
    the broker cannot be looked into. Reads every message: for a few runs
    among a backlog, runs_waiting reads fewer."""
    batches = _on_queue_keys(sorted({run_queue(host) for host in hosts}), "lrange", 0, -1)
    if batches is None:
        return None
    return {run_id for batch in batches for run_id in map(_run_id_of, batch) if run_id is not None}


@dataclass
class QueueLook:
    """What runs_waiting found: the runs asked about that have a message
    waiting, and how many messages it read to know."""

    found: set[int]
    read: int = 0


# The first read from a queue's tail takes this many messages per run asked about (at least
# TAIL_MIN); each further read doubles, up to TAIL_MAX in all before one read of the whole queue.
TAIL_PER_RUN, TAIL_MIN, TAIL_MAX = 2, 256, 8192


def runs_waiting(*, runs: dict[str, set[int]]) -> QueueLook | None:
    """Which of ``runs`` (run ids by host; "" for the shared queue) have a
    message waiting in their queue, as queued_run_ids says, reading as few
    messages as it can; None when the broker cannot be looked into.

    A queue is FIFO: the messages of the runs queued longest, those the
    recovery sweep asks about, wait at its tail (the end workers take from).
    So each queue is read from the tail, in growing slices, until every run
    asked about is found: with a healthy backlog the cost follows the number
    of runs asked about, not the backlog's length. Slices read one after the
    other can miss a message that moves while they are read (workers take
    from the tail), so when a run is still not found, the whole queue is read
    at once (one MULTI: a consistent snapshot) and that answer is the one
    given: a run is reported without a message only when that snapshot had
    none for it."""
    client = events.broker_client()
    if client is None:
        return None
    look = QueueLook(found=set())
    try:
        for host, run_ids in sorted(runs.items()):
            _look_into(client, run_queue(host), set(run_ids), look)
    except redis.RedisError as exc:
        logger.warning("could not look into the run queues: %s", exc)
        return None
    return look


def _look_into(client: redis.Redis, queue: str, wanted: set[int], look: QueueLook) -> None:
    """Add to ``look`` those of ``wanted`` with a message in ``queue``; raises redis.RedisError."""
    keys = redis_adapter.queue_keys(queue)
    missing, done, size, slices = set(wanted), 0, max(TAIL_MIN, TAIL_PER_RUN * len(wanted)), 0
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.llen(key)
        longest = max(pipe.execute())
    while missing and done < longest and done < TAIL_MAX:
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.lrange(key, -(done + size), -(done + 1))
            batches = pipe.execute()
        done, size, slices = done + size, size * 2, slices + 1
        for batch in batches:
            look.read += len(batch)
            missing -= set(map(_run_id_of, batch))
    if missing and (slices > 1 or done < longest):
        # Read in several slices, or only in part: one snapshot of the whole queue decides.
        with client.pipeline(transaction=True) as pipe:
            for key in keys:
                pipe.lrange(key, 0, -1)
            batches = pipe.execute()
        for batch in batches:
            look.read += len(batch)
            missing -= set(map(_run_id_of, batch))
    look.found |= wanted - missing


def queue_counts(*, hosts) -> dict[str, int] | None:
    """How many messages are ready in the queue of each of ``hosts`` ("" for
    the shared queue), by host, on an AMQP broker (those a worker holds
    unacknowledged aside); None when the broker is not AMQP or cannot be asked."""
    url = settings.CELERY_BROKER_URL
    if not amqp_adapter.is_amqp(url):
        return None
    queues = {host: run_queue(host) for host in hosts}
    try:
        counts = amqp_adapter.queue_counts(url, sorted(set(queues.values())))
    except amqp_adapter.ERRORS as exc:
        logger.warning("could not count the messages in the run queues: %s", exc)
        return None
    return {host: counts[queue] for host, queue in queues.items()}


def queue_length(*, host: str | None = None) -> int | None:
    """How many messages wait in the queue of ``host`` (default: the shared
    queue); None when unknown."""
    if amqp_adapter.is_amqp(settings.CELERY_BROKER_URL):
        counts = queue_counts(hosts=[host or ""])
        return None if counts is None else counts[host or ""]
    lengths = _on_queue_keys([run_queue(host)], "llen")
    return None if lengths is None else sum(lengths)


def _active_queues(timeout: float) -> dict[str, set[str]] | None:
    """The queues each live worker consumes, by worker name, asked over
    Celery's remote control (this takes ``timeout`` seconds: every worker's
    reply is awaited); None when the broker cannot be asked."""
    try:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception as exc:  # noqa: BLE001 - kombu raises several kinds for an unreachable broker
        logger.warning("could not ask workers for their queues: %s", exc)
        return None
    return {
        name: {q.get("name") for q in queues or () if isinstance(q, dict)} for name, queues in replies.items()
    }


def live_consumers(*, host: str | None = None, timeout: float = 2.0) -> list[str] | None:
    """Names of the live workers consuming the queue of ``host`` (default:
    the shared queue); None when the broker cannot be asked."""
    queue = run_queue(host)
    replies = _active_queues(timeout)
    if replies is None:
        return None
    return sorted(name for name, queues in replies.items() if queue in queues)


def live_hosts(*, timeout: float = 2.0) -> list[str] | None:
    """The hosts live workers serve (from their host queues), sorted; None
    when the broker cannot be asked."""
    replies = _active_queues(timeout)
    if replies is None:
        return None
    return sorted({
        queue[len(QUEUE_PREFIX):] for queues in replies.values() for queue in queues
        if isinstance(queue, str) and queue.startswith(QUEUE_PREFIX)
    })



# Seconds a question to the broker may take to connect when it is asked, not assumed, to be there.
BROKER_CONNECT_SECONDS = 3.0


def _bounded_connection(timeout: float):
    """A connection of the app whose connect and socket operations give up after ``timeout`` seconds."""
    return app.connection_for_write(
        connect_timeout=timeout,
        transport_options={"socket_connect_timeout": timeout, "socket_timeout": timeout},
    )


def broker_unreachable(*, timeout: float = BROKER_CONNECT_SECONDS) -> str | None:
    """Why the workers cannot be asked anything now (one phrase), or None when
    the broker answers within ``timeout`` seconds. Never starts the embedded broker."""
    if settings.CELERY_BROKER_IS_EMBEDDED:
        from apps.broker.embedded import embedded_broker

        broker = embedded_broker()
        if broker.pid() is None:
            return "the embedded broker is not running"
        return None if broker.answers(timeout=timeout) else "the embedded broker does not answer"
    connection = _bounded_connection(timeout)
    try:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, interval_max=0, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - kombu raises several kinds for an unreachable broker
        return f"the broker cannot be reached ({type(exc).__name__})"
    finally:
        connection.release()
    return None


def workers_env_missing(*, names: list[str], timeout: float, expected: int | None = None) -> dict[str, object] | None:
    """Each live worker's answer to ENV_MISSING_COMMAND about ``names``, by
    worker name: ``{"missing": [names it lacks], "queues": [queues it
    consumes]}`` (an older worker answers ``{"error": ...}``). Waits up to
    ``timeout`` seconds, less once ``expected`` workers have answered; None
    when the broker cannot be asked (it went away after broker_unreachable)."""
    try:
        with _bounded_connection(BROKER_CONNECT_SECONDS) as connection:
            replies = app.control.broadcast(
                ENV_MISSING_COMMAND, arguments={"names": list(names)}, reply=True, timeout=timeout,
                limit=expected or None, connection=connection,
            ) or []
    except Exception as exc:  # noqa: BLE001 - kombu raises several kinds for a broker that went away
        logger.warning("could not ask workers for their environment: %s", exc)
        return None
    answers: dict[str, object] = {}
    for reply in replies:
        if isinstance(reply, dict):
            answers.update(reply)
    return answers
