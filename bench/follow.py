"""The --follow event delay: a node's end (its stage's ``finished_at``) to the
moment the follower has its line.

    .venv/bin/python bench/follow.py [--brokers embedded,redis] [--runs 50]

For each broker, in the same kind of fresh environment as bench/run.py (a
SQLite file and the embedded broker, or Redis and PostgreSQL), a child process
starts a real worker and launches ``--runs`` runs of a three-node pipeline one
after the other, each followed in-process the way ``run_pipeline --follow``
follows it (``pipeline_run_wait`` with a ``RunProgress``). Each node end heard
as a progress event is timed when the follower reports it; the delay is that
time minus the stage's ``finished_at`` (the worker wrote it on the database's
clock; worker, database and follower share this host's clock). Ends found in
the record instead (a node that ended before the follower subscribed) are
counted but not timed. Prints a Markdown table; nothing is written to the
repository.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measure import Worker, log  # noqa: E402

TARGET_P95_MS = 10.0
WARMUP_RUNS = 3
RUN_TIMEOUT = 60.0
PIPELINE = {
    "version": "1.0",
    "description": "benchmark: followed runs",
    "nodes": [
        {"id": "a", "type": "transform", "config": {"mapping": {"x": "payload.x"}}, "next": "b"},
        # A node that takes a moment, so the follower is surely listening when the next ones end.
        {"id": "b", "type": "context", "config": {"include": ["cpu"], "options": {"cpu": {"interval": 0.05}}},
         "next": "c"},
        {"id": "c", "type": "transform", "config": {"mapping": {"y": "a.x"}}},
    ],
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def child(args) -> int:
    """One broker's measurement (the environment is set by the parent)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    import logging

    for name in ("apps", "workers", "celery"):
        logging.getLogger(name).setLevel(logging.WARNING)

    from apps.orchestration import inputs, launch, waiting
    from apps.orchestration.launchrequest import LaunchRequest
    from apps.orchestration.management.output import RunProgress
    from apps.orchestration.models import PipelineRun, StageExecution
    from workers.celery import app

    class TimedProgress(RunProgress):
        """Notes when each node end heard as an event is reported."""

        def __init__(self):
            super().__init__(lambda line: None)
            self.heard: dict[str, float] = {}
            self.from_row = 0
            self._in_row = False

        def event(self, event: dict) -> None:
            key = ("end", event.get("node"), event.get("attempt") or 1)
            fresh = event.get("phase") == "end" and key not in self.shown
            super().event(event)
            if fresh and not self._in_row:
                self.heard[event["node"]] = time.time()
            elif fresh:
                self.from_row += 1

        def row(self, run) -> None:
            self._in_row = True
            try:
                super().row(run)
            finally:
                self._in_row = False

    workdir = Path(args.workdir)
    config = workdir / "followed.json"
    config.write_text(json.dumps(PIPELINE))
    env = dict(os.environ)
    worker = Worker(app="workers", name=f"bench-follow-{os.getpid()}@bench", env=env,
                    log_path=workdir / "worker-follow.log")
    delays: list[float] = []
    from_row = 0
    try:
        worker.start()
        worker.wait_ready(app)
        resolved = inputs.definition_resolve(config_path=str(config))
        for i in range(WARMUP_RUNS + args.runs):
            run = launch.pipeline_run_launch(request=LaunchRequest(resolved=resolved, payload={"x": i}, source="bench"))
            progress = TimedProgress()
            outcome = waiting.pipeline_run_wait(run_id=run.pk, timeout=RUN_TIMEOUT, pickup_timeout=RUN_TIMEOUT,
                                                progress=progress)
            if outcome.reason != "finished" or outcome.run.status != PipelineRun.Status.COMPLETED:
                raise RuntimeError(f"run {run.pk}: {outcome.reason}, {outcome.run.status}, {outcome.run.error!r}")
            if i < WARMUP_RUNS:
                continue
            from_row += progress.from_row
            ends = dict(StageExecution.objects.filter(run_id=run.pk).values_list("node_id", "finished_at"))
            delays += [(at - ends[node].timestamp()) * 1000 for node, at in progress.heard.items()]
    finally:
        worker.stop()
    Path(args.out).write_text(json.dumps({"delays_ms": delays, "ends_from_record": from_row, "runs": args.runs}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", default="embedded,redis", help="comma-separated: embedded, redis")
    parser.add_argument("--runs", type=int, default=50, help="followed runs per broker (default 50)")
    parser.add_argument("--redis-db", type=int, default=9, help="spare Redis database, flushed (default 9)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    from apps.broker.embedded import EmbeddedBroker
    from bench.run import PYTHON, prepare, run_child

    rows = []
    for broker in [b.strip() for b in args.brokers.split(",") if b.strip()]:
        workdir = Path(tempfile.mkdtemp(prefix="bf", dir="/tmp"))
        try:
            log(f"{broker}: following {args.runs} runs")
            env = prepare(broker, workdir, args.redis_db)
            out = workdir / "follow.json"
            cmd = [PYTHON, str(Path(__file__)), "--child", "--workdir", str(workdir), "--out", str(out),
                   "--runs", str(args.runs)]
            result = run_child(cmd, env, out, 60 + 5 * args.runs, f"{broker}: follow delay")
        finally:
            EmbeddedBroker(workdir / "b").stop()
            shutil.rmtree(workdir, ignore_errors=True)
        delays = result["delays_ms"]
        rows.append((broker, len(delays), result["ends_from_record"], statistics.median(delays), pct(delays, 95),
                     max(delays)))
    print("| broker | node ends timed | ends found in the record | p50 (ms) | p95 (ms) | max (ms) | "
          f"target p95 <= {TARGET_P95_MS:g} ms |")
    print("|---|---|---|---|---|---|---|")
    for broker, count, untimed, p50, p95, top in rows:
        print(f"| {broker} | {count} | {untimed} | {p50:.2f} | {p95:.2f} | {top:.2f} | "
              f"{'met' if p95 <= TARGET_P95_MS else 'missed'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
