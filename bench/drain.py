"""How fast one worker drains a backlog: N queued runs, then a worker with
``-c 2`` or ``-c 4`` prefork processes started to empty the queue.

Per broker, a fresh environment of its own (a temp dir; for ``redis`` the
PostgreSQL database PG_DATABASE, so no other benchmark's runs or workers
share it). For each concurrency, with no worker running, the child launches
``--drain-runs`` runs of the 3-node transform pipeline through the launcher
(``definition_resolve`` + ``pipeline_run_launch``), checks that that many
messages wait in the run queue, starts ONE worker (``-c 2`` or ``-c 4``) and
waits until every run has ended; the times come from the PipelineRun rows.
The same backlog of raw Celery no-op tasks (bench/floor_app.py) is drained
the same way by a floor worker with the same concurrency, for a ratio.

    python -m bench.drain --broker embedded --workdir /tmp/bbXXXX --out drain.json --runs 1000   # the child

bench/run.py runs it for each broker (``--drain-only`` for nothing else) and
puts its section, "Drain", in docs/benchmarks.md (run.replace_section); the
child always stops its worker (``Worker.stop`` in finally), and run.py the
embedded broker, and flushes the Redis database it used.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_DATABASE = "bench_drain"  # its own database: a worker's sweep would take over another benchmark's runs
TITLE = "## Drain"
CONCURRENCIES = (2, 4)
FLOOR_DELIVERIES = ("default", "project")  # bench/floor_app.py's Celery defaults, and the launcher's settings
CHILD_TIMEOUT = 300  # seconds for start-ups and stops, plus RUN_SECONDS per run and concurrency
RUN_SECONDS = 0.25  # launching plus draining one run, bounded generously (about 0.03 s measured)
POLL_SECONDS = 0.25  # how often the child reads how many runs have ended


def log(message: str) -> None:
    print(f"[bench drain {os.environ.get('BENCH_BROKER', '?')}] {message}", file=sys.stderr, flush=True)


# --- the child: one broker -----------------------------------------------------------------

def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # runs the finally block that stops the worker


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _purge_runs(app) -> int:
    """Empty the run queue (no worker runs now) and the runs table; the messages purged."""
    from bench.measure import runs_clear

    purged = app.control.purge()
    runs_clear()
    return purged


def _launch_backlog(config_path: str, n: int) -> tuple[list[int], float]:
    """Launch ``n`` runs as `run_pipeline --config F` does (no worker running); their ids and
    the seconds it took. Raises unless exactly ``n`` messages then wait in the run queue."""
    from apps.orchestration import dispatch, inputs, launch
    from apps.orchestration.launchrequest import LaunchRequest

    t0 = time.perf_counter()
    ids = []
    for i in range(n):
        resolved = inputs.definition_resolve(config_path=config_path)
        request = LaunchRequest(resolved=resolved, payload={"x": i}, source="bench")
        ids.append(launch.pipeline_run_launch(request=request).pk)
    seconds = time.perf_counter() - t0
    waiting = dispatch.queue_length()
    if waiting != n:
        raise RuntimeError(f"{waiting} messages wait in the run queue after launching {n} runs")
    return ids, seconds


def _drain_runs(ids: list[int], worker, app, timeout: float) -> dict:
    """Start ``worker`` and wait (bounded) until every run in ``ids`` has ended; the times."""
    from apps.orchestration.models import PipelineRun

    runs = PipelineRun.objects.filter(pk__in=ids)
    load_before = _loadavg()
    wall_start = time.time()
    worker.start()
    ready = worker.wait_ready(app)
    deadline = time.monotonic() + timeout
    while runs.filter(finished_at__isnull=False).count() < len(ids) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    wall_seen = time.time()
    rows = list(runs.values_list("status", "created_at", "started_at", "finished_at"))
    load_after = _loadavg()
    done = [(c.timestamp(), s.timestamp(), f.timestamp()) for status, c, s, f in rows
            if status == PipelineRun.Status.COMPLETED]
    if not done:
        raise RuntimeError(f"no run completed within {timeout:.0f} s; see {worker.log_path}")
    first_start = min(s for _, s, _ in done)
    return {
        "count": len(ids),
        "completed": len(done),
        "statuses": {status: sum(1 for r in rows if r[0] == status) for status in {r[0] for r in rows}},
        "worker_start": wall_start,
        "worker_ready_s": ready,
        "all_ended_seen_s": wall_seen - wall_start,
        "first_started": first_start,
        "first_finished": min(f for _, _, f in done),
        "last_finished": max(f for _, _, f in done),
        "queue_s": [s - c for c, s, _ in done],  # started_at - created_at
        "wait_after_drain_began_s": [s - first_start for _, s, _ in done],
        "load_before": load_before,
        "load_after": load_after,
    }


def _as_timestamp(when: str) -> float:
    """A result backend's date_done (UTC; naive in some Celery versions) as a timestamp."""
    when = datetime.datetime.fromisoformat(when)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def _drain_noops(n: int, worker, app, timeout: float) -> dict:
    """Send ``n`` no-op tasks with no floor worker running, start ``worker``, wait (bounded)
    until the result backend holds every result; the times, from its date_done.

    The results are counted every POLL_SECONDS with one EXISTS, as the runs are counted
    with one query, so collecting them costs this process no more CPU than the runs do."""
    from bench.floor_app import noop

    app.control.purge()
    results = [noop.apply_async() for _ in range(n)]
    backend = app.backend
    keys = [backend.get_key_for_task(result.id) for result in results]
    load_before = _loadavg()
    wall_start = time.time()
    worker.start()
    ready = worker.wait_ready(app)
    deadline = time.monotonic() + timeout
    while backend.client.exists(*keys) < n and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    metas = [backend.decode_result(raw) for raw in backend.client.mget(keys) if raw is not None]
    dones = [_as_timestamp(meta["date_done"]) for meta in metas if meta["status"] == "SUCCESS"]
    if len(dones) != n:
        raise RuntimeError(f"{len(dones)} of {n} no-op tasks succeeded within {timeout:.0f} s; see {worker.log_path}")
    return {
        "count": n, "completed": len(dones), "worker_start": wall_start, "worker_ready_s": ready,
        "first_finished": min(dones), "last_finished": max(dones),
        "load_before": load_before, "load_after": _loadavg(),
    }


def child_main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", required=True, choices=["embedded", "redis"])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    from bench.measure import child_setup

    child_setup(args.broker, _on_sigterm)
    workdir = Path(args.workdir)

    from django.conf import settings

    from apps.broker.embedded import ensure_broker
    from bench.floor_app import app as floor_app
    from bench.measure import PIPELINE, Worker
    from workers.celery import app

    ensure_broker()  # the embedded one, when in use: the floor's tasks are sent before any worker starts
    config_path = workdir / "three-transforms.json"
    config_path.write_text(json.dumps(PIPELINE))
    config_path = str(config_path)
    worker_env = {k: v for k, v in os.environ.items() if k != "BENCH_BROKER"}
    floor_env = {k: v for k, v in worker_env.items() if k != "DJANGO_SETTINGS_MODULE"}
    floor_env["PYTHONPATH"] = str(ROOT)
    timeout = 60 + RUN_SECONDS * args.runs
    tag = os.getpid()
    result: dict = {
        "broker": args.broker,
        "database": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
        "runs": args.runs, "launcher": {}, "floor": {},
    }
    for concurrency in CONCURRENCIES:
        purged = _purge_runs(app)
        log(f"-c {concurrency}: launching {args.runs} runs with no worker running")
        ids, launch_s = _launch_backlog(config_path, args.runs)
        log_path = workdir / f"worker-drain-c{concurrency}.log"
        worker = Worker(app="workers", name=f"bench-drain-c{concurrency}-{tag}@bench", env=worker_env,
                        log_path=log_path, concurrency=concurrency)
        try:
            sample = _drain_runs(ids, worker, app, timeout)
        finally:
            worker.stop()
        sample.update(launch_s=launch_s, purged_before=purged,
                      recovered=log_path.read_text(errors="replace").count("event=run.recovered"))
        result["launcher"][str(concurrency)] = sample
        span = sample["last_finished"] - sample["first_started"]
        log(f"-c {concurrency}: {sample['completed']}/{args.runs} completed, {args.runs / span:.1f} runs/s "
            f"(first started_at -> last finished_at), launched in {launch_s:.1f} s")
        for delivery in FLOOR_DELIVERIES:
            extra = {"BENCH_FLOOR_DELIVERY": "project"} if delivery == "project" else {}
            worker = Worker(app="bench.floor_app", name=f"bench-drain-floor-{delivery}-c{concurrency}-{tag}@bench",
                            env={**floor_env, **extra}, concurrency=concurrency,
                            log_path=workdir / f"worker-floor-{delivery}-c{concurrency}.log")
            try:
                floor = _drain_noops(args.runs, worker, floor_app, timeout)
            finally:
                worker.stop()
            result["floor"][f"{delivery}-{concurrency}"] = floor
            log(f"-c {concurrency}: {args.runs} no-ops ({delivery} delivery), "
                f"{(args.runs - 1) / (floor['last_finished'] - floor['first_finished']):.0f} tasks/s")
    Path(args.out).write_text(json.dumps(result, indent=1))
    log("done")
    return 0


# --- the parent: bench/run.py -----------------------------------------------------------------

def wanted(args) -> bool:
    """Whether bench/run.py measures the drain with these arguments."""
    return args.drain_only or not (args.no_drain or args.schedule_only or args.hosts_only or args.alerts_only)


def measure_drain(broker: str, args) -> dict:
    """One broker's drains, measured by the child in a fresh environment of its own."""
    from bench import run as bench

    return bench.measure_in_child(
        broker, args, module="bench.drain", label="drain", options=["--runs", str(args.drain_runs)],
        timeout=CHILD_TIMEOUT + RUN_SECONDS * args.drain_runs * len(CONCURRENCIES) * (1 + len(FLOOR_DELIVERIES)),
        database=PG_DATABASE,
    )


HOW_MEASURED = """\
Per broker, in a fresh environment like the ones above but of its own (for
`redis` the PostgreSQL database `{database}`, so no other benchmark's worker
can sweep its runs), for `-c 2` then `-c 4`: with no worker running, the run
queue purged and the runs table emptied, {runs} runs of the 3-node `transform`
pipeline are launched one after another, each as `run_pipeline --config F`
launches it (`definition_resolve` + `pipeline_run_launch`, in-process), and
the benchmark checks that {runs} messages wait in the run queue. Then ONE
worker starts (`celery -A workers worker -P prefork -c 2|4 --without-mingle
--without-gossip -l info`, the project's settings: acks_late, prefetch
multiplier 1, the default lease and sweep settings) and the benchmark reads,
every {poll:g} s, how many runs have a `finished_at`, until all have or
{timeout:.0f} s have passed. All times come from the PipelineRun rows
(`created_at`, `started_at`, `finished_at`; one host, one clock). "Drain" is
the first `started_at` to the last `finished_at`; runs/s is {runs} over it.
"From the worker's start" counts from just before the worker process is
spawned (its start-up, Django and the pool included). "Steady" is ({runs} - 1)
over the first `finished_at` to the last, the same measure as the raw
Celery column's. Queue time is `started_at` minus `created_at`: it holds the
time spent launching the backlog and the worker's start-up, so its maximum is
about the launching time plus the drain; "wait after the drain began" is
`started_at` minus the first `started_at`. Runs re-published counts
`event=run.recovered` lines in the worker's log (the recovery sweep at start
and every 15 s; a duplicate message is dropped by the claim). Raw Celery:
right after each launcher drain, the same number of no-op tasks of
bench/floor_app.py (no Django, a Redis result backend on the same server)
are sent with no floor worker running, then a floor worker with the same
`-P prefork -c` starts; the benchmark counts the stored results every
{poll:g} s (one Redis EXISTS, as cheap as the runs' count) until all are
there. The tasks have no `started_at`, so the rate is ({runs} - 1) over the
first result's `date_done` to the last (the result backend's, same clock). It runs with Celery's default
delivery settings (prefetch multiplier 4) and with the launcher's (acks_late,
reject on worker lost, prefetch multiplier 1); the ratio is the launcher's
steady rate over the raw one with the launcher's delivery settings. The
load average of each drain is read just before the worker starts and just
after the last run ended. Runs that did not complete must be 0.
"""


def report(results: dict[str, dict], args, facts: dict, elapsed: float) -> tuple[str, str, list[str]]:
    """The table, the "Drain" section of docs/benchmarks.md, and the runs that did not complete."""
    from bench.run import _markdown, pct

    columns = [(b, c) for b in results for c in CONCURRENCIES]
    n = args.drain_runs

    def launcher(b, c):
        return results[b]["launcher"][str(c)]

    def floor(b, c, delivery):
        return results[b]["floor"][f"{delivery}-{c}"]

    def steady(sample):
        return (sample["count"] - 1) / (sample["last_finished"] - sample["first_finished"])

    def drain_rate(b, c):
        s = launcher(b, c)
        return s["count"] / (s["last_finished"] - s["first_started"])

    def cells(fmt) -> list[str]:
        return [fmt(b, c) for b, c in columns]

    def scaling(b, c):
        return "-" if c == CONCURRENCIES[0] else f"{drain_rate(b, c) / drain_rate(b, CONCURRENCIES[0]):.2f}x"

    rows = [
        ("database", cells(lambda b, c: results[b]["database"])),
        ("launching the backlog, no worker running (s)", cells(lambda b, c: f"{launcher(b, c)['launch_s']:.1f}")),
        ("worker start -> answers a ping (s)", cells(lambda b, c: f"{launcher(b, c)['worker_ready_s']:.1f}")),
        ("drain: first started_at -> last finished_at (s)",
         cells(lambda b, c: f"{launcher(b, c)['last_finished'] - launcher(b, c)['first_started']:.2f}")),
        ("**runs/s** (first started_at -> last finished_at)", cells(lambda b, c: f"**{drain_rate(b, c):.1f}**")),
        (f"  scaling over -c {CONCURRENCIES[0]}", cells(scaling)),
        ("runs/s from the worker's start (start-up included)",
         cells(lambda b, c: f"{n / (launcher(b, c)['last_finished'] - launcher(b, c)['worker_start']):.1f}")),
        ("runs/s steady (first -> last finished_at)", cells(lambda b, c: f"{steady(launcher(b, c)):.1f}")),
        ("queue time (started_at - created_at), p50 / **max** (s)",
         cells(lambda b, c: f"{pct(launcher(b, c)['queue_s'], 50):.1f} / **{max(launcher(b, c)['queue_s']):.1f}**")),
        ("wait after the drain began (started_at - first started_at), p50 / max (s)",
         cells(lambda b, c: f"{pct(launcher(b, c)['wait_after_drain_began_s'], 50):.1f} / "
                            f"{max(launcher(b, c)['wait_after_drain_began_s']):.1f}")),
        ("runs not completed (must be 0)", cells(lambda b, c: str(n - launcher(b, c)["completed"]))),
        ("runs re-published by the worker's recovery sweep", cells(lambda b, c: str(launcher(b, c)["recovered"]))),
        ("raw Celery no-ops/s steady, launcher's delivery settings",
         cells(lambda b, c: f"{steady(floor(b, c, 'project')):.0f}")),
        ("raw Celery no-ops/s steady, Celery's default delivery",
         cells(lambda b, c: f"{steady(floor(b, c, 'default')):.0f}")),
        ("launcher steady / raw (launcher's delivery settings)",
         cells(lambda b, c: f"{steady(launcher(b, c)) / steady(floor(b, c, 'project')):.2f}x")),
        ("load average before -> after the launcher's drain",
         cells(lambda b, c: " -> ".join(launcher(b, c)[k].split()[0] for k in ("load_before", "load_after")))),
    ]
    table = _markdown([f"{n} queued runs, one worker (3 transform nodes)", *(f"{b} -c {c}" for b, c in columns)],
                      [[m, *v] for m, v in rows])
    incomplete = [f"{b} -c {c}: {n - launcher(b, c)['completed']} of {n} runs did not complete "
                  f"({launcher(b, c)['statuses']})" for b, c in columns if launcher(b, c)["completed"] != n]
    verdict = ("Runs that did not complete: " + "; ".join(incomplete) + ".") if incomplete else \
        "Every run completed on every broker and concurrency."
    if args.drain_only:
        command = (f".venv/bin/python bench/run.py --drain-only --drain-runs {n} --brokers {','.join(results)}"
                   f" --redis-db {args.redis_db}")
        when = (f"Measured on its own on {facts['date']} (took {elapsed:.0f} s), not in the run that produced "
                f"the sections above; re-run:\n\n    {command}\n\n"
                f"Same machine; load average (1, 5, 15 min) before / after: {facts['load_before']} / "
                f"{facts['load_after']}.")
    else:
        when = "Measured in the same run as the sections above."
    when += (f" The machine has {facts['nproc']} CPUs, shared by the worker's processes, the broker, the "
             f"database and the benchmark process: a -c above that count cannot add CPU, only overlap waits.")
    how = HOW_MEASURED.format(database=PG_DATABASE, runs=n, poll=POLL_SECONDS, timeout=60 + RUN_SECONDS * n)
    return table, f"{TITLE}\n\n{when}\n\n{table}\n\n{verdict}\n\n{how}", incomplete


if __name__ == "__main__":
    sys.exit(child_main())
