"""The recovery sweep with a healthy backlog: N runs queued in Redis, no
worker, every one older than the grace period (``grace_seconds=0``), so each
sweep looks for the messages of its BATCH candidates among N messages.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/i21bounds \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/5 python -m bench.sweep_backlog --runs 10000

On RabbitMQ (``CELERY_BROKER_URL=amqp://...``, a virtual host of its own,
whose run queue is purged first) the sweep counts the queue instead: the
same healthy sweeps, then one message taken from the queue's head (the
oldest run's) and the sweep that re-sends that run.

Empties the Redis database and deletes the database's runs first (both must
be the bench's own). Launches the runs through the launcher, then times
``runs_recover`` (p50/p95 of ``--sweeps``), which must re-send nothing, next
to reading the whole queue as the sweep did before (``queued_run_ids``);
then deletes one message near the head of the queue and times the sweep that
finds it lost and re-sends it. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _timed(function, repeat: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        times.append((time.perf_counter() - started) * 1000)
    return times, result


def _summary(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"p50_ms": round(statistics.median(ordered), 2),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--sweeps", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from apps.orchestration import dispatch, events, inputs, launch, launchrequest, recovery
    from apps.orchestration.models import PipelineDefinition, PipelineRun

    url = os.environ.get("CELERY_BROKER_URL", "")
    if url.startswith(("amqp://", "amqps://")):
        amqp_main(args)
        return
    client = events.broker_client()
    if client is None or not url.startswith("redis://"):
        raise SystemExit("bench.sweep_backlog needs CELERY_BROKER_URL=redis://... or amqp://... (its own)")
    client.flushdb()
    PipelineRun.objects.all().delete()
    nodes = [{"id": "shape", "type": "transform", "config": {"mapping": {"x": "payload.x"}}}]
    PipelineDefinition.objects.update_or_create(name="backlog", defaults={"config": {"version": "1.0", "nodes": nodes}})
    request = launchrequest.LaunchRequest(resolved=inputs.definition_resolve(name="backlog"), payload={"x": 1})
    started = time.perf_counter()
    for _ in range(args.runs):
        launch.pipeline_run_launch(request=request)
    launched = time.perf_counter() - started
    assert dispatch.queue_length() == args.runs
    healthy, sent = _timed(lambda: recovery.runs_recover(grace_seconds=0), args.sweeps)
    assert sent == [], sent
    candidates = set(PipelineRun.objects.filter(status="queued").order_by("pk").values_list("pk", flat=True)[
        : recovery.BATCH
    ])
    look_times, look = _timed(lambda: dispatch.runs_waiting(runs={"": candidates}), args.sweeps)
    whole, ids = _timed(lambda: dispatch.queued_run_ids(), args.sweeps)
    assert ids is not None and len(ids) == args.runs
    # A message lost near the head (the newest): the sweep's candidates are the oldest, so it is found
    # lost only once it is among them; make it the oldest run's message to be found at once.
    oldest = PipelineRun.objects.filter(status="queued").order_by("pk").first()
    assert oldest is not None
    raw = next(m for m in client.lrange(dispatch.run_queue(), -10, -1) if dispatch._run_id_of(m) == oldest.pk)
    client.lrem(dispatch.run_queue(), 1, raw)
    lost_times, sent = _timed(lambda: recovery.runs_recover(grace_seconds=0), 1)
    assert [r.run_id for r in sent] == [oldest.pk], sent  # type: ignore[attr-defined]
    print(json.dumps({
        "backlog": args.runs,
        "launch_ms_per_run": round(launched / args.runs * 1000, 2),
        "sweep_healthy": _summary(healthy),
        "its_look_into_the_queue": {**_summary(look_times), "messages_read": look.read},  # type: ignore[attr-defined]
        "read_whole_queue": _summary(whole),
        "sweep_with_one_lost": {"ms": round(lost_times[0], 2)},
    }, indent=2))
    client.flushdb()


def _backlog_launch(runs: int) -> float:
    """Delete every run, then launch ``runs`` runs of a one-node definition; seconds per run."""
    from apps.orchestration import inputs, launch, launchrequest
    from apps.orchestration.models import PipelineDefinition, PipelineRun

    PipelineRun.objects.all().delete()
    nodes = [{"id": "shape", "type": "transform", "config": {"mapping": {"x": "payload.x"}}}]
    PipelineDefinition.objects.update_or_create(name="backlog", defaults={"config": {"version": "1.0", "nodes": nodes}})
    request = launchrequest.LaunchRequest(resolved=inputs.definition_resolve(name="backlog"), payload={"x": 1})
    started = time.perf_counter()
    for _ in range(runs):
        launch.pipeline_run_launch(request=request)
    return (time.perf_counter() - started) / runs


def amqp_main(args) -> None:
    import kombu
    from django.conf import settings

    from apps.orchestration import dispatch, recovery
    from apps.orchestration.models import PipelineRun

    with kombu.Connection(settings.CELERY_BROKER_URL) as connection:
        channel = connection.channel()
        channel.queue_declare(dispatch.run_queue(), durable=True, auto_delete=False)
        channel.queue_purge(dispatch.run_queue())
    per_run = _backlog_launch(args.runs)
    assert dispatch.queue_length() == args.runs, dispatch.queue_length()
    healthy, sent = _timed(lambda: recovery.runs_recover(grace_seconds=0), args.sweeps)
    assert sent == [], sent
    count_times, _ = _timed(lambda: dispatch.queue_counts(hosts=[""]), args.sweeps)
    oldest = PipelineRun.objects.filter(status="queued").order_by("created_at", "pk").first()
    assert oldest is not None
    with kombu.Connection(settings.CELERY_BROKER_URL) as connection:
        taken = connection.channel().basic_get(dispatch.run_queue(), no_ack=True)  # the head: the oldest run's
    assert taken is not None and taken.headers["id"].startswith(f"run-{oldest.pk}-"), taken
    lost_times, sent = _timed(lambda: recovery.runs_recover(grace_seconds=0), 1)
    assert [r.run_id for r in sent] == [oldest.pk], sent
    print(json.dumps({
        "broker": "rabbitmq",
        "backlog": args.runs,
        "launch_ms_per_run": round(per_run * 1000, 2),
        "sweep_healthy": _summary(healthy),
        "its_count_of_the_queue": _summary(count_times),
        "sweep_with_one_lost": {"ms": round(lost_times[0], 2)},
    }, indent=2))
    PipelineRun.objects.all().delete()
    with kombu.Connection(settings.CELERY_BROKER_URL) as connection:
        connection.channel().queue_purge(dispatch.run_queue())


if __name__ == "__main__":
    main()
