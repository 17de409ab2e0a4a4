"""Soak: kill whole workers mid-run again and again; every run must still complete.

    .venv/bin/python scripts/soak.py                          # 20 rounds, embedded broker + SQLite
    .venv/bin/python scripts/soak.py --broker redis --rounds 50
    .venv/bin/python scripts/soak.py --moments slow --lease 30 --interval 15 --grace 20   # the defaults

Each round starts a fresh victim worker (`-c 1`, in a session of its own),
launches a run `first` (CPU sample, --first-seconds) -> `slow` (CPU sample,
--slow-seconds) -> `last` (memory), lets only the victim take it, and SIGKILLs
the victim's whole process group at one of the kill moments, taken in turn:

- ``claim``: as soon as the run is claimed (before or while `first` starts);
- ``first``: a third into the first node;
- ``slow``: a third into the slow node.

A survivor worker runs throughout and must complete the run. After every round
the run is checked: completed, by the survivor, after a `reason=lease_expired`
recovery; every node succeeded exactly once; the only failed stage is the
attempt the kill interrupted ("interrupted: ..."); no stage left `running`.
At the end no stage row of the whole database may be `running`. One line is
printed per round (the recovery time: kill -> the run's finished_at) and a
summary (p50 / max, failures). The exit status is 0 when every check passed,
1 otherwise, 2 for bad arguments or a Redis database that is not empty.
How a round works: bench/recovery.py.

Lease and sweep settings are short by default so a round takes seconds:
RUN_LEASE_SECONDS=6, RUN_RECOVERY_INTERVAL_SECONDS=1, RUN_RECOVERY_GRACE_SECONDS=2
(--lease, --interval, --grace). A round takes about 13 s (20 rounds: about 4.5 min).

Environments (private, always cleaned up: workers stopped by process group,
the embedded broker stopped, the temp dir removed, the Redis database
flushed, the PostgreSQL database dropped):

- ``embedded``: a temp dir /tmp/skXXXXXXXX (a short path, for the unix
  socket) holding a new SQLite database and the embedded broker;
- ``redis``: Redis on 127.0.0.1:6379, database --redis-db (default 7; it
  must be empty at the start, and is flushed at the end) and a
  PostgreSQL database on 127.0.0.1:5432 (trust auth as ``postgres``) named
  --pg-database (default ``soak_launcher``), created for the soak and dropped
  at the end (dropped first if a crashed soak left it behind).

--keep keeps the temp dir (worker logs) for a look afterwards.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import run as bench  # noqa: E402  (environments: temp dir, database, broker)
from bench.recovery import MOMENTS, KillRig, RoundFailed  # noqa: E402

MAX_FAILURES_IN_A_ROW = 3  # then the soak stops: something is broken, not flaky


def say(message: str) -> None:
    print(message, flush=True)


def pct(values: list[float], p: float) -> float:
    return bench.pct(values, p)


def drop_pg_database(name: str) -> None:
    """Drop PostgreSQL database ``name`` if it exists (its sessions are ended first)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(bench.PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)  # run the finally blocks: workers, broker, temp dir, database


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Kill whole workers mid-run again and again; every run must still complete.",
        epilog="See the docstring of scripts/soak.py.",
    )
    parser.add_argument("--rounds", type=int, default=20, help="kills (default 20)")
    parser.add_argument("--broker", choices=["embedded", "redis"], default="embedded",
                        help="embedded (+ SQLite, default) or redis (+ PostgreSQL)")
    parser.add_argument("--moments", default=",".join(MOMENTS),
                        help=f"kill moments taken in turn, comma-separated (default {','.join(MOMENTS)})")
    parser.add_argument("--lease", type=float, default=6.0, help="RUN_LEASE_SECONDS (default 6)")
    parser.add_argument("--interval", type=float, default=1.0, help="RUN_RECOVERY_INTERVAL_SECONDS (default 1)")
    parser.add_argument("--grace", type=float, default=2.0, help="RUN_RECOVERY_GRACE_SECONDS (default 2)")
    parser.add_argument("--first-seconds", type=float, default=1.5, help="the first node's CPU sample (default 1.5)")
    parser.add_argument("--slow-seconds", type=float, default=3.0, help="the slow node's CPU sample (default 3)")
    parser.add_argument("--round-timeout", type=float, default=None,
                        help="seconds from a kill until the run must have ended "
                             "(default 60 + 2 x lease + 2 x interval + grace)")
    parser.add_argument("--redis-db", type=int, default=7,
                        help="spare Redis database: must be empty, flushed at the end (default 7)")
    parser.add_argument("--pg-database", default="soak_launcher",
                        help="PostgreSQL database created and dropped by the soak (default soak_launcher)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir with the worker logs")
    args = parser.parse_args()
    args.moments = [m.strip() for m in args.moments.split(",") if m.strip()]
    if not args.moments or any(m not in MOMENTS for m in args.moments):
        parser.error(f"--moments takes a comma-separated list of: {', '.join(MOMENTS)}")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if min(args.lease, args.interval, args.first_seconds, args.slow_seconds) <= 0 or args.grace < 0:
        parser.error("--lease, --interval, --first-seconds and --slow-seconds must be > 0, --grace >= 0")
    if max(args.first_seconds, args.slow_seconds) > 10:
        parser.error("--first-seconds and --slow-seconds are CPU samples of at most 10 s")
    if args.round_timeout is None:
        args.round_timeout = 60 + 2 * args.lease + 2 * args.interval + args.grace
    return args


def main() -> int:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    args = parse_args()
    settings_env = {
        "RUN_LEASE_SECONDS": f"{args.lease:g}",
        "RUN_RECOVERY_INTERVAL_SECONDS": f"{args.interval:g}",
        "RUN_RECOVERY_GRACE_SECONDS": f"{args.grace:g}",
    }
    workdir = Path(tempfile.mkdtemp(prefix="sk", dir="/tmp"))
    created_db = redis_claimed = False
    rig = None
    samples: list[dict] = []
    failures: list[str] = []
    started = time.monotonic()
    try:
        say(f"soak: {args.rounds} rounds on {args.broker}, kill moments {','.join(args.moments)}, "
            f"lease {args.lease:g}s, sweep every {args.interval:g}s, grace {args.grace:g}s; workdir {workdir}")
        if args.broker == "redis":
            keys = bench.redis_client(args.redis_db).dbsize()
            if keys:  # someone else's queues, perhaps: never flush those
                say(f"Redis database {args.redis_db} holds {keys} key(s): pick an empty one with --redis-db "
                    f"(or, if a crashed soak left them, `redis-cli -n {args.redis_db} flushdb`)")
                return 2
            redis_claimed = True
            drop_pg_database(args.pg_database)  # a crashed soak's leftovers
            created_db = True
        env = bench.prepare(args.broker, workdir, args.redis_db, database=args.pg_database, extra_env=settings_env)
        # Django reads its settings once: this process takes the soak's environment before setup.
        os.environ.clear()
        os.environ.update(env)
        import django

        django.setup()
        import logging

        for name in ("apps", "workers", "celery"):  # the workers log; this process prints its summary
            logging.getLogger(name).setLevel(logging.ERROR)

        rig = KillRig(env=env, workdir=workdir, tag=str(os.getpid()), first_seconds=args.first_seconds,
                      slow_seconds=args.slow_seconds, last=True, run_timeout=args.round_timeout, source="soak",
                      jitter=args.interval)
        say(f"survivor ready in {rig.start():.1f}s")
        in_a_row = 0
        for index in range(args.rounds):
            moment = args.moments[index % len(args.moments)]
            label = f"round {index + 1:>3}/{args.rounds} kill at {moment:<5}"
            try:
                sample = rig.round(index, moment)
            except RoundFailed as exc:
                failures.append(f"{label}: {exc}")
                say(f"{label} FAILED: {exc}")
                in_a_row += 1
            except Exception as exc:  # noqa: BLE001 - a broken round is a failure to report, not a crash
                failures.append(f"{label}: {type(exc).__name__}: {exc}")
                say(f"{label} FAILED: {type(exc).__name__}: {exc}")
                traceback.print_exc()
                in_a_row += 1
            else:
                in_a_row = 0
                samples.append(sample)
                interrupted = [f"{n}#{a}" for n, a, status in sample["stages"] if status == "failed"]
                say(f"{label} run {sample['run_id']:>4}: completed {sample['recovery_s']:5.1f}s after the kill "
                    f"(lease left {sample['lease_left_s']:4.1f}s, re-published at {sample['republished_s']:4.1f}s; "
                    f"interrupted {', '.join(interrupted) or 'nothing'}; {len(sample['stages'])} stages)")
            if in_a_row >= MAX_FAILURES_IN_A_ROW:
                failures.append(f"stopped after {in_a_row} failed rounds in a row")
                say(f"soak: {in_a_row} failed rounds in a row, stopping")
                break
        failures.extend(final_checks())
    finally:
        if rig is not None:
            rig.stop()
        from apps.broker.embedded import EmbeddedBroker

        EmbeddedBroker(workdir / "b").stop()
        if redis_claimed:
            try:
                bench.redis_client(args.redis_db).flushdb()
            except Exception as exc:  # noqa: BLE001 - cleanup must not hide the real error
                say(f"could not flush redis db {args.redis_db}: {exc}")
            if created_db:
                try:
                    from django.db import connections

                    connections.close_all()
                except Exception:  # noqa: BLE001 - Django may not be set up yet
                    pass
                try:
                    drop_pg_database(args.pg_database)
                except Exception as exc:  # noqa: BLE001
                    say(f"could not drop PostgreSQL database {args.pg_database}: {exc}")
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    summarize(samples, failures, args, time.monotonic() - started)
    return 1 if failures else 0


def final_checks() -> list[str]:
    """Checks over the whole soak database once every round is over."""
    from apps.orchestration.models import PipelineRun, StageExecution

    problems = []
    running = StageExecution.objects.filter(status=StageExecution.Status.RUNNING).count()
    if running:
        problems.append(f"{running} stage row(s) left running in the database")
    unfinished = list(PipelineRun.objects.exclude(status=PipelineRun.Status.COMPLETED).values_list("pk", "status"))
    if unfinished:
        problems.append(f"runs not completed: {unfinished}")
    return problems


def summarize(samples: list[dict], failures: list[str], args, elapsed: float) -> None:
    say("")
    say(f"soak on {args.broker}: {len(samples)} of {args.rounds} rounds passed, {len(failures)} failure(s), "
        f"{elapsed:.0f}s in all")
    if samples:
        times = [s["recovery_s"] for s in samples]
        say(f"kill -> run completed: p50 {pct(times, 50):.1f}s, max {max(times):.1f}s, min {min(times):.1f}s "
            f"(lease {args.lease:g}s, sweep every {args.interval:g}s, grace {args.grace:g}s)")
        for moment in args.moments:
            mine = [s["recovery_s"] for s in samples if s["moment"] == moment]
            if mine:
                say(f"  kill at {moment:<5}: {len(mine):>3} rounds, p50 {statistics.median(mine):.1f}s, "
                    f"max {max(mine):.1f}s")
    for failure in failures:
        say(f"FAILED {failure}")
    if failures and not args.keep:
        say("the worker logs went with the temp dir; --keep keeps them")


if __name__ == "__main__":
    sys.exit(main())
