"""The worker's main process over a long drain: its RSS after each step of
runs, to see whether it grows once warm (issue: <= 5 MB from run 2,000 to
20,000).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/i21bounds \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/6 python -m bench.worker_memory --runs 20000

Empties the Redis database and deletes the database's runs first (both must
be the bench's own). Launches the runs of the 3-node transform pipeline
(bench/measure.py's) through the launcher, starts ONE worker (``-c 2``,
prefork) with its log in a temporary file, and every ``--step`` ended runs
samples the main process: RSS, anonymous memory, threads, open files
(psutil, /proc/<pid>/smaps_rollup). Prints one JSON object: the samples,
the growth from the first sample at or after run 2,000 to the last, and that
growth projected to 18,000 runs (linear) when fewer runs were drained.

``--trace FRAMES`` finds what grows: the worker starts with
PYTHONTRACEMALLOC=FRAMES and bench/memprobe/ (a sitecustomize, bench only)
on its PYTHONPATH, the main process dumps a tracemalloc snapshot at each
sample (SIGUSR2), and the JSON gains ``traced``: the Python allocations'
growth from the warm sample to the last, in all and by the top sites. Its
RSS then holds tracemalloc's own bookkeeping: compare ``traced``, not RSS.

Measured (PostgreSQL, Redis, -c 2, a loaded machine, 2026-12-07):
before, 116.9 MB at run 2,005 and 125.5 MB at 20,000: +8.6 MB, a steady
~0.5 KB per run. ``--trace 10`` over 8,000 runs (the compaction turned off
with WORKER_TIMER_COMPACT_SECONDS=1e9) put all of the traced growth, 2.4 MB
for 6,000 runs, in one object group per run: the time-limit timer the prefork
pool sets for each task (celery/concurrency/asynpool.py, kombu's
asynchronous/timer.py), cancelled when the task ends but kept in the timer's
heap until its time, the soft limit (RUN_TIME_LIMIT_SECONDS + 10, over an
hour). After the worker dropped cancelled entries (workers/celery.py,
TimerCompaction, every WORKER_TIMER_COMPACT_SECONDS = 60): 117.2 MB at run
2,010, 117.4 MB at 20,000: +0.2 MB (samples between 116.8 and 118.8 MB).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PROBE = ROOT / "bench" / "memprobe"

WARM = 2000  # runs after which the worker counts as warm
TIMEOUT_PER_RUN = 0.5  # seconds, generous: about 0.03 s measured per run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--step", type=int, default=1000)
    parser.add_argument(
        "--trace", type=int, default=0, metavar="FRAMES",
        help="trace the main process's allocations (tracemalloc, FRAMES frames deep; slows the worker) "
        "and print the sites that grew from the warm sample to the last",
    )
    parser.add_argument("--top", type=int, default=15, help="sites printed with --trace")
    args = parser.parse_args()
    # A stopped bench stops its worker (the finally below); SIGINT is ignored in a background job.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from apps.orchestration import events, inputs, launch, launchrequest
    from apps.orchestration.models import PipelineDefinition, PipelineRun
    from bench.measure import PIPELINE, Worker

    client = events.broker_client()
    if client is None or not os.environ.get("CELERY_BROKER_URL", "").startswith("redis://"):
        raise SystemExit("bench.worker_memory needs CELERY_BROKER_URL=redis://... (a database of its own)")
    client.flushdb()
    PipelineRun.objects.all().delete()
    PipelineDefinition.objects.update_or_create(name="memory", defaults={"config": PIPELINE})
    request = launchrequest.LaunchRequest(resolved=inputs.definition_resolve(name="memory"), payload={"x": 1})
    for _ in range(args.runs):
        launch.pipeline_run_launch(request=request)
    workdir = Path(tempfile.mkdtemp(prefix="worker-memory-"))
    env = {**os.environ, "LOG_LEVEL": "WARNING"}
    snapshots: dict[int, Path] = {}
    if args.trace:
        # The probe (bench/memprobe/sitecustomize.py) dumps a snapshot of the process sent SIGUSR2.
        env.update(PYTHONTRACEMALLOC=str(args.trace), MEMPROBE_DIR=str(workdir),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(PROBE), env.get("PYTHONPATH")])))
    worker = Worker(app="workers", name=f"memory-{os.getpid()}@bench", env=env, log_path=workdir / "worker.log")
    samples = []
    try:
        worker.start()
        main = psutil.Process(worker.proc.pid)
        deadline = time.monotonic() + 120 + args.runs * TIMEOUT_PER_RUN
        target = args.step
        while target <= args.runs:
            ended = PipelineRun.objects.filter(status__in=PipelineRun.TERMINAL).count()
            if ended >= target:
                samples.append(_sample(main, ended))
                if args.trace:
                    snapshots[ended] = _snapshot(main, workdir, len(snapshots) + 1)
                target += args.step
                continue
            if time.monotonic() > deadline or worker.proc.poll() is not None:
                raise SystemExit(f"the worker did not drain the runs; see {worker.log_path}")
            time.sleep(0.2)
    finally:
        worker.stop()
        client.flushdb()
    warm = next(s for s in samples if s["runs"] >= WARM) if args.runs >= WARM else samples[0]
    last = samples[-1]
    growth = last["rss_mb"] - warm["rss_mb"]
    per_run = growth / max(1, last["runs"] - warm["runs"])
    result = {
        "samples": samples, "growth_mb": round(growth, 2), "from_run": warm["runs"], "to_run": last["runs"],
        "projected_growth_2000_to_20000_mb": round(per_run * 18_000, 2),
    }
    if args.trace:
        result["traced"] = _traced_growth(snapshots[warm["runs"]], snapshots[last["runs"]], args.top)
        for path in snapshots.values():  # tens of MB each; the worker's log stays
            path.unlink()
    print(json.dumps(result, indent=2))


def _sample(main: psutil.Process, ended: int) -> dict:
    """The main process now: RSS, its anonymous memory, threads and open files."""
    with main.oneshot():
        rss, threads, fds = main.memory_info().rss, main.num_threads(), main.num_fds()
    anonymous = _smaps_rollup(main.pid).get("Anonymous", 0)
    return {"runs": ended, "rss_mb": round(rss / 2**20, 2), "anon_mb": round(anonymous / 2**10, 2),
            "threads": threads, "fds": fds}


def _smaps_rollup(pid: int) -> dict[str, int]:
    """/proc/<pid>/smaps_rollup's fields, in kB ({} where the kernel has no such file)."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    except OSError:
        return {}
    return {name.rstrip(":"): int(value) for name, value, *_ in (line.split() for line in lines)}


def _snapshot(main: psutil.Process, workdir: Path, n: int) -> Path:
    """Has the probe in the main process dump its ``n``th tracemalloc snapshot; its file."""
    done = workdir / f"snapshot-{main.pid}-{n}.done"
    main.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + 300
    while not done.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"no snapshot from the worker's main process in {workdir}")
        time.sleep(0.2)
    return done


def _traced_growth(first: Path, last: Path, top: int) -> dict:
    """What the Python allocations of the main process grew by between two
    snapshots: in all, and the ``top`` sites (by line, and by call stack)."""
    import tracemalloc

    ignore = [tracemalloc.Filter(False, tracemalloc.__file__),
              tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]
    old = tracemalloc.Snapshot.load(str(first)).filter_traces(ignore)
    new = tracemalloc.Snapshot.load(str(last)).filter_traces(ignore)

    def total(snapshot):
        return sum(stat.size for stat in snapshot.statistics("filename"))

    def site(stat):
        return {"kb": round(stat.size_diff / 1024, 1), "count": stat.count_diff, "at": [str(f) for f in stat.traceback]}

    return {
        "total_mb": round((total(new) - total(old)) / 2**20, 2),
        "by_line": [site(s) for s in new.compare_to(old, "lineno")[:top]],
        "by_stack": [site(s) for s in new.compare_to(old, "traceback")[:top]],
    }


if __name__ == "__main__":
    main()
