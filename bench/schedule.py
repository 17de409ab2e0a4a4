"""The scheduling delay for ONE broker, run by bench/run.py in a child process.

A definition scheduled ``{"every": 1}`` with one cheap ``transform`` node is
loaded the way ``load_pipelines`` loads it (``definitions_load``: the
definition and its django-celery-beat PeriodicTask); a real worker and a real
beat (``celery -A workers beat``, with the settings' database scheduler) then
run until ``--ticks`` scheduled runs, after WARMUP_TICKS, have completed.
Each run's delay is its ``started_at`` minus the time its tick was due, which
beat stamped into the tick and the launcher into the run's idempotency key
``schedule:<name>:<due ISO time>``.

The environment (DATABASE_URL, CELERY_BROKER_URL or EMBEDDED_BROKER_DIR) is
set by run.py and the database is migrated. This process starts and always
stops its worker and its beat, and writes the raw samples as JSON to --out.

    python -m bench.schedule --broker embedded --workdir /tmp/bbXXXX --out schedule.json --ticks 50

``--herd`` measures beat at production size instead, on the database and
broker of the environment (DATABASE_URL, CELERY_BROKER_URL; migrated; its
runs and schedules are replaced): HERD_SCHEDULES scheduled definitions, half
of them due every minute (``cron * * * * *``, overlap allow) and half once a
year, fired by a real beat with no worker, for ``--minutes`` whole minutes
after a warm-up minute. It prints the tick delay (a run's ``created_at``
minus the due time in its key) p50/p95/max and beat's CPU (user + system,
from /proc) as a share of one core over the measured minutes:

    DATABASE_URL=postgres://... CELERY_BROKER_URL=redis://127.0.0.1:6379/7 \
        python -m bench.schedule --herd --workdir /tmp/herd --minutes 3

``--fire`` measures the same herd in this process, which a busy machine
disturbs less than the tick delay: the HERD_SCHEDULES schedules loaded as
above, the every-minute half made due at once, fired by
``ticks.schedules_fire`` (the runs' rows, then their messages) ``--fires``
times, the runs and the queue emptied in between. It prints each fire's
wall and CPU time and the load average beside them:

    DATABASE_URL=postgres://... CELERY_BROKER_URL=redis://127.0.0.1:6379/7 python -m bench.schedule --fire
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measure import CELERY, READY_TIMEOUT, Worker, child_setup, runs_clear, stop_group  # noqa: E402

NAME = "bench-tick"
EVERY_SECONDS = 1
WARMUP_TICKS = 3  # left out: start-up, while the pool processes and their connections warm up
TICK_SLACK = 60.0  # seconds allowed on top of one interval per expected tick
DEFINITION = {
    "version": "1.0",
    "description": "benchmark: a scheduled one-node pipeline",
    "schedule": {"every": EVERY_SECONDS, "payload": {"x": 1}},
    "nodes": [{"id": "a", "type": "transform", "config": {"mapping": {"x": "payload.x"}}}],
}


def log(message: str) -> None:
    print(f"[bench schedule {os.environ.get('BENCH_BROKER', '?')}] {message}", file=sys.stderr, flush=True)


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # runs the finally blocks that stop beat and the worker


class Beat:
    """A `celery -A workers beat` child process in a session of its own, always
    stopped by process group (SIGTERM, then SIGKILL)."""

    def __init__(self, *, env: dict, workdir: Path):
        self.log_path = workdir / "beat.log"
        self.cmd = [CELERY, "-A", "workers", "beat", "-l", "info", "-s", str(workdir / "celerybeat-schedule")]
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> float:
        """Start beat; seconds until its scheduler has read the schedules (bounded)."""
        self._log = open(self.log_path, "ab")
        start = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        while time.monotonic() - start < READY_TIMEOUT:
            if self.proc.poll() is not None:
                raise RuntimeError(f"beat exited with {self.proc.returncode}; see {self.log_path}")
            if "Scheduler: " in self.log_path.read_text(errors="replace"):
                return time.monotonic() - start
            time.sleep(0.05)
        raise TimeoutError(f"beat not ready after {READY_TIMEOUT:g}s; see {self.log_path}")

    def stop(self) -> None:
        proc = self.proc
        if proc is not None:
            stop_group(proc)
        if self._log is not None:
            self._log.close()
            self._log = None


def due_of(key: str) -> datetime:
    """The due time in an idempotency key ``schedule:<name>:<ISO time>``."""
    return datetime.fromisoformat(key.split(":", 2)[2])


def wait_for_runs(count: int, timeout: float, worker: Worker, beat: Beat) -> None:
    """Wait (bounded) until ``count`` scheduled runs of NAME have ended."""
    from apps.orchestration.models import PipelineRun

    deadline = time.monotonic() + timeout
    runs = PipelineRun.objects.filter(definition_name=NAME, trigger=PipelineRun.Trigger.SCHEDULE)
    while True:
        done = runs.exclude(status__in=PipelineRun.ACTIVE).count()
        if done >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done} of {count} scheduled runs ended within {timeout:g}s; "
                               f"see {worker.log_path} and {beat.log_path}")
        for what, proc, path in (("worker", worker.proc, worker.log_path), ("beat", beat.proc, beat.log_path)):
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}; see {path}")
        time.sleep(0.2)


HERD_SCHEDULES = 2000
HERD_PREFIX = "bench-herd-"


def herd_load() -> None:
    """Replace the database's runs and schedules with HERD_SCHEDULES scheduled definitions."""
    from django_celery_beat.models import PeriodicTask

    from apps.orchestration.models import PipelineDefinition
    from apps.orchestration.schedules import schedule_sync

    runs_clear()
    PeriodicTask.objects.filter(task="orchestration.run_scheduled").delete()
    PipelineDefinition.objects.filter(name__startswith=HERD_PREFIX).delete()
    nodes = DEFINITION["nodes"]
    for i in range(HERD_SCHEDULES):
        cron = "* * * * *" if i % 2 == 0 else "0 0 1 1 *"
        config = {"version": "1.0", "schedule": {"cron": cron, "overlap": "allow"}, "nodes": nodes}
        schedule_sync(definition=PipelineDefinition.objects.create(name=f"{HERD_PREFIX}{i:04d}", config=config))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def herd_main(args) -> int:
    import statistics

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from apps.orchestration.models import PipelineRun

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    herd_load()
    log(f"{HERD_SCHEDULES} schedules loaded in {time.monotonic() - started:.1f}s")
    beat = Beat(env=dict(os.environ), workdir=workdir)
    try:
        beat.start()
        assert beat.proc is not None
        # Whole minutes: from the second minute boundary on (the first minute warms up).
        time.sleep(60 - time.time() % 60 + 60 + 0.5)
        window_start, cpu_start, wall_start = datetime.now().astimezone(), cpu_seconds(beat.proc.pid), time.monotonic()
        time.sleep(args.minutes * 60)
        cpu = (cpu_seconds(beat.proc.pid) - cpu_start) / (time.monotonic() - wall_start)
    finally:
        beat.stop()
    runs = PipelineRun.objects.filter(trigger="schedule", created_at__gte=window_start - timedelta(seconds=5))
    delays = sorted((run.created_at - due_of(run.idempotency_key)).total_seconds()
                    for run in runs.only("created_at", "idempotency_key")
                    if due_of(run.idempotency_key) >= window_start)
    if not delays:
        raise RuntimeError(f"no scheduled run in the measured window; see {beat.log_path}")
    p95 = delays[min(len(delays) - 1, round(0.95 * (len(delays) - 1)))]
    if args.out:
        Path(args.out).write_text(json.dumps({
            "schedules": HERD_SCHEDULES, "every_minute": HERD_SCHEDULES // 2, "minutes": args.minutes,
            "ticks": len(delays), "delay_p50_s": statistics.median(delays), "delay_p95_s": p95,
            "delay_max_s": delays[-1], "beat_cpu_share": cpu, "load": _loadavg(),
        }))
    print(f"beat, {HERD_SCHEDULES} schedules ({HERD_SCHEDULES // 2} due every 60 s), {args.minutes} min: "
          f"{len(delays)} ticks, tick delay p50 {statistics.median(delays):.3f} s, p95 {p95:.3f} s, "
          f"max {delays[-1]:.3f} s; beat CPU {cpu * 100:.1f}% of a core; load average {_loadavg()}")
    return 0


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def fire_main(args) -> int:
    """One herd fired in this process, ``args.fires`` times (see the module's docstring)."""
    import logging
    import statistics
    from datetime import UTC

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    logging.getLogger("apps").setLevel(logging.WARNING)  # a line per tick would be measured too
    from django.db.models.functions import Now

    from apps.orchestration import beatstate, dispatch
    from apps.orchestration.models import ScheduleState
    from apps.orchestration.ticks import schedules_fire
    from workers.celery import app

    herd_load()
    beatstate.schedule_states_sync(now=datetime.now(UTC))
    holder = beatstate.holder_name()
    if not beatstate.lease_take(holder=holder):
        raise RuntimeError("another beat holds the lease on this database: stop it first")
    every_minute = ScheduleState.objects.filter(schedule__startswith="cron * * * * * ")
    walls, cpus = [], []
    try:
        for _ in range(args.fires):
            runs_clear()
            every_minute.update(next_due_at=Now() - timedelta(seconds=1))
            wall, cpu = time.perf_counter(), time.process_time()
            fired = schedules_fire(holder=holder)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            if fired.ticks != HERD_SCHEDULES // 2 or len(fired.runs) != fired.ticks:
                raise RuntimeError(f"fired {fired.ticks} ticks, {len(fired.runs)} runs: expected {HERD_SCHEDULES // 2}")
            with app.connection_for_write() as connection:
                connection.default_channel.queue_purge(dispatch.run_queue())
    finally:
        beatstate.lease_release(holder=holder)
    print(f"schedules_fire, {HERD_SCHEDULES // 2} of {HERD_SCHEDULES} schedules due, {args.fires} fires: "
          f"wall p50 {statistics.median(walls):.3f} s, max {max(walls):.3f} s; "
          f"CPU p50 {statistics.median(cpus):.3f} s, max {max(cpus):.3f} s "
          f"(each, wall/CPU: {' '.join(f'{w:.2f}/{c:.2f}' for w, c in zip(walls, cpus, strict=True))}); "
          f"load average {_loadavg()}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--herd", action="store_true")
    parser.add_argument("--minutes", type=int, default=3)
    parser.add_argument("--fire", action="store_true")
    parser.add_argument("--fires", type=int, default=5)
    if parser.parse_known_args()[0].fire:
        return fire_main(parser.parse_args())
    if parser.parse_known_args()[0].herd:
        parser.add_argument("--workdir", required=True)
        parser.add_argument("--out", help="also write the figures to this file, as JSON")
        return herd_main(parser.parse_args())
    parser.add_argument("--broker", required=True, choices=["embedded", "redis"])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--ticks", type=int, default=50)
    args = parser.parse_args()
    child_setup(args.broker, _on_sigterm)
    workdir = Path(args.workdir)

    from django.conf import settings
    from django_celery_beat.models import PeriodicTask

    from apps.orchestration.loading import definitions_load
    from apps.orchestration.models import PipelineDefinition, PipelineRun
    from apps.orchestration.schedules import task_name
    from workers.celery import app

    # A benchmark-only database: no runs, no schedule of ours left from an earlier run.
    runs_clear()
    PeriodicTask.objects.filter(name=task_name(NAME)).delete()
    PipelineDefinition.objects.filter(name=NAME).delete()

    env = {k: v for k, v in os.environ.items() if k != "BENCH_BROKER"}
    env["LOG_FORMAT"] = "text"  # the skipped ticks are counted in the worker's text log
    worker = Worker(app="workers", name=f"bench-schedule-{os.getpid()}@bench", env=env,
                    log_path=workdir / "worker-schedule.log")
    beat = Beat(env=env, workdir=workdir)
    expected = WARMUP_TICKS + args.ticks
    result: dict = {
        "broker": args.broker,
        "database": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
        "every_seconds": EVERY_SECONDS,
        "warmup_ticks": WARMUP_TICKS,
        "ticks": args.ticks,
    }
    try:
        worker.start()
        result["worker_ready_s"] = worker.wait_ready(app)
        folder = workdir / "scheduled"
        folder.mkdir(exist_ok=True)
        (folder / f"{NAME}.json").write_text(json.dumps(DEFINITION))
        report = definitions_load(folder=folder)
        if report.refused or report.schedules != [(NAME, f"schedule: every {EVERY_SECONDS}s")]:
            raise RuntimeError(f"loading the scheduled definition: {report}")
        result["beat_ready_s"] = beat.start()
        log(f"worker ready in {result['worker_ready_s']:.1f}s, beat in {result['beat_ready_s']:.1f}s; "
            f"waiting for {expected} ticks ({WARMUP_TICKS} warm-up) of every {EVERY_SECONDS}s")
        started = time.monotonic()
        wait_for_runs(expected, expected * EVERY_SECONDS + TICK_SLACK, worker, beat)
        result["elapsed_s"] = time.monotonic() - started
    finally:
        try:
            beat.stop()  # first, so no tick is sent to a worker that is going away
        finally:
            worker.stop()
            PeriodicTask.objects.filter(name=task_name(NAME)).update(enabled=False)

    runs = list(PipelineRun.objects.filter(definition_name=NAME, trigger=PipelineRun.Trigger.SCHEDULE)
                .exclude(status__in=PipelineRun.ACTIVE).order_by("pk"))
    bad = [(run.pk, run.status, run.error) for run in runs if run.status != PipelineRun.Status.COMPLETED]
    if bad:
        raise RuntimeError(f"scheduled runs that did not complete: {bad[:5]}")
    runs.sort(key=lambda run: due_of(run.idempotency_key))
    measured = runs[WARMUP_TICKS:expected]
    dues = [due_of(run.idempotency_key) for run in measured]
    worker_log = worker.log_path.read_text(errors="replace")
    result.update({
        "delay_ms": [(run.started_at - due).total_seconds() * 1000 for run, due in zip(measured, dues, strict=True)],
        "due_to_created_ms": [
            (run.created_at - due).total_seconds() * 1000 for run, due in zip(measured, dues, strict=True)
        ],
        "created_to_started_ms": [(run.started_at - run.created_at).total_seconds() * 1000 for run in measured],
        "due_gaps_s": [(b - a).total_seconds() for a, b in pairwise(dues)],
        "skipped_ticks": worker_log.count(f"event=schedule.skipped definition={NAME} "),
        "duplicate_ticks": worker_log.count(f"event=schedule.duplicate definition={NAME} "),
        "ticks_sent": beat.log_path.read_text(errors="replace").count(f"Sending due task {task_name(NAME)} "),
        "runs_ended": len(runs),
    })
    Path(args.out).write_text(json.dumps(result, indent=1))
    log(f"done: {len(measured)} ticks measured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
