"""The floor: a plain Celery app with one no-op task, on the broker under test.

Configured only from BENCH_BROKER_URL (the broker) and BENCH_BACKEND_URL (a
Redis result backend on the same server). Django's fixup is disabled
(``fixups=[]``) so the worker does no database work around tasks: this is what
a round trip costs with nothing but Celery and the broker.

BENCH_FLOOR_DELIVERY=project gives it the launcher's delivery settings
(acks_late, prefetch multiplier 1, reject on worker lost) to tell apart what
those settings cost from what the launcher's own work costs.

``bench.recorded`` (queue ``bench-floor-recorded``) is the no-op plus the
statements that record a run, on the database BENCH_FLOOR_DATABASE names
(bench/floor_records.py); the benchmark runs it with the launcher's delivery
settings.
"""
import os
import uuid

from celery import Celery

QUEUE = "bench-floor"
NOOP = "bench.noop"
RECORDED_QUEUE = "bench-floor-recorded"
RECORDED = "bench.recorded"

app = Celery(
    "bench_floor",
    broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/9"),
    backend=os.environ.get("BENCH_BACKEND_URL", "redis://127.0.0.1:6379/9"),
    fixups=[],
)
app.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    result_expires=600,
)
if os.environ.get("BENCH_FLOOR_DELIVERY") == "project":
    app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1)


@app.task(name=NOOP)
def noop():
    return None


@app.task(name=RECORDED, queue=RECORDED_QUEUE)
def recorded(run_id):
    from bench import floor_records

    floor_records.run_execute(run_id, uuid.uuid4().hex)
