"""The measurements for ONE broker, run by bench/run.py in a child process.

The environment (DATABASE_URL, CELERY_BROKER_URL or EMBEDDED_BROKER_DIR,
BENCH_BROKER_URL, BENCH_BACKEND_URL) is set by run.py, and the database is
already migrated. This process starts and always stops its own workers, and
writes every raw sample as JSON to --out.

    python -m bench.measure --broker embedded --workdir /tmp/bbXXXX --out result.json
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
PYTHON = str(BIN / "python") if (BIN / "python").exists() else sys.executable
CELERY = str(BIN / "celery") if (BIN / "celery").exists() else str(Path(sys.executable).parent / "celery")

READY_TIMEOUT = 60.0  # seconds a worker (or the embedded broker) gets to come up
STOP_TIMEOUT = 15.0  # seconds a worker gets for a warm shutdown before it is killed
RUN_TIMEOUT = 30.0  # seconds one run / one round trip may take before the benchmark fails
WARMUP = 5  # round trips / runs done before measuring (connections, pool children, caches)

# Three cheap nodes: each maps one field of the previous output.
PIPELINE = {
    "version": "1.0",
    "description": "benchmark: three transform nodes",
    "nodes": [
        {"id": "a", "type": "transform", "config": {"mapping": {"x": "payload.x"}}, "next": "b"},
        {"id": "b", "type": "transform", "config": {"mapping": {"y": "a.x"}}, "next": "c"},
        {"id": "c", "type": "transform", "config": {"mapping": {"z": "b.y"}}},
    ],
}

# What the "bare" process of the CLI comparison does: Django, the Celery app, one message.
BARE_SNIPPET = (
    "import os\n"
    "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings')\n"
    "import django\n"
    "django.setup()\n"
    "from workers.celery import app\n"
    "app.send_task('orchestration.execute_run', args=[0])\n"
)


def log(message: str) -> None:
    print(f"[bench {os.environ.get('BENCH_BROKER', '?')}] {message}", file=sys.stderr, flush=True)


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # runs the finally blocks that stop the workers


class Worker:
    """A `celery worker` child process that is always stopped (terminate, then kill); with
    ``new_session`` it runs in a session of its own and is stopped by process group."""

    def __init__(self, *, app: str, name: str, env: dict, log_path: Path, concurrency: int = 2,
                 new_session: bool = False, queues: str | None = None):
        self.name = name
        # In a session of its own, the worker's process group (main + pool) can be killed as one.
        self.new_session = new_session
        self.cmd = [
            CELERY, "-A", app, "worker", "-P", "prefork", "-c", str(concurrency), "-n", name,
            "-l", "info", "--without-mingle", "--without-gossip", *(["-Q", queues] if queues else []),
        ]
        self.env, self.log_path = env, log_path
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> Worker:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.cmd, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=self.new_session,
        )
        return self

    def pids(self) -> set[int]:
        """The main process and its pool processes, as they are now."""
        try:
            main = psutil.Process(self.proc.pid)
            return {main.pid, *(child.pid for child in main.children(recursive=True))}
        except psutil.Error:
            return set()

    def kill_group(self) -> None:
        """SIGKILL the whole process group at once, as the OOM killer or `docker kill` would,
        and reap the main process (bounded). Only for a worker started with ``new_session``."""
        assert self.new_session, "only a worker in its own session has a process group of its own"
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(STOP_TIMEOUT)
        _wait_group_gone(self.proc.pid, signal.SIGKILL)

    def wait_ready(self, control_app) -> float:
        """Seconds until the worker answers a ping addressed to it (bounded)."""
        start = time.monotonic()
        deadline = start + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if control_app.control.ping(destination=[self.name], timeout=0.5):
                    return time.monotonic() - start
            except Exception:  # noqa: BLE001 - the broker is not reachable yet, whatever the transport raises
                time.sleep(0.1)
        raise TimeoutError(f"worker {self.name} not ready after {READY_TIMEOUT:g}s; see {self.log_path}")

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and self.new_session:
            try:
                stop_group(proc)
            finally:
                if self._log is not None:
                    self._log.close()
                    self._log = None
        elif proc is not None and proc.poll() is None:
            try:
                children = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                children = []
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            # pool processes of a killed main process: ours, by pid (psutil checks it is the same process)
            _, alive = psutil.wait_procs(children, timeout=5)
            for child in alive:
                try:
                    child.kill()
                except psutil.Error:
                    pass
            psutil.wait_procs(alive, timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None


def _group_members(pgid: int) -> list[psutil.Process]:
    """The live (not zombie) processes of process group ``pgid``."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group of ``proc`` (started in a new session: a warm
    shutdown), then SIGKILL to whatever of the group is left after STOP_TIMEOUT."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)
    _wait_group_gone(proc.pid, signal.SIGKILL)


def _wait_group_gone(pgid: int, sig: int, timeout: float = 10.0) -> None:
    """Send ``sig`` to what is left of process group ``pgid`` (pool processes that outlived
    their main process) until no live member is left; bounded by ``timeout``. The group is
    ours: its id is the pid of a worker this process started in a new session."""
    deadline = time.monotonic() + timeout
    while _group_members(pgid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"process group {pgid} still has members {timeout:g}s after signal {sig}")
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        time.sleep(0.05)


class CpuMeter:
    """CPU seconds used by each side of a test: the worker (main + pool), this process,
    the broker and the database server (PostgreSQL; SQLite works inside the others),
    plus the whole machine's busy time. Processes are found by pid or name, read only."""

    def __init__(self, *, worker_pid: int, broker_pid: int | None):
        self.worker_pid, self.broker_pid = worker_pid, broker_pid

    @staticmethod
    def _cpu(procs, children_of=()) -> float:
        total = 0.0
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
            if proc in children_of:  # reaped children, e.g. PostgreSQL backends that came and went
                total += times.children_user + times.children_system
        return total

    def snapshot(self) -> dict:
        worker = psutil.Process(self.worker_pid)
        try:
            worker_procs = [worker, *worker.children(recursive=True)]
        except psutil.Error:
            worker_procs = [worker]
        if self.broker_pid:
            broker = [psutil.Process(self.broker_pid)]
        else:
            broker = [p for p in psutil.process_iter(["name", "cmdline"])
                      if p.info["name"] == "redis-server" and ":6379" in " ".join(p.info["cmdline"] or [])]
        pg = [p for p in psutil.process_iter(["name", "ppid"]) if p.info["name"] == "postgres"]
        postmaster = [p for p in pg if p.info["ppid"] not in {q.pid for q in pg}]
        machine = psutil.cpu_times()
        return {
            "worker": self._cpu(worker_procs, children_of=[worker]),
            "benchmark process": self._cpu([psutil.Process()]),
            "broker": self._cpu(broker),
            "postgresql": self._cpu(pg, children_of=postmaster),
            "machine busy": sum(machine) - machine.idle - getattr(machine, "iowait", 0.0),
        }

    @staticmethod
    def delta(before: dict, after: dict) -> dict:
        return {key: after[key] - before[key] for key in before}


def timed_ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


# --- launcher --------------------------------------------------------------------------

def launcher_once(config_path: str, i: int) -> dict:
    """One run, launched and waited for in-process, as `run_pipeline --config F --wait` does."""
    from apps.orchestration import inputs, launch, waiting
    from apps.orchestration.launchrequest import LaunchRequest
    from apps.orchestration.models import PipelineRun

    wall0 = time.time()
    t0 = time.perf_counter()
    resolved = inputs.definition_resolve(config_path=config_path)
    run = launch.pipeline_run_launch(request=LaunchRequest(resolved=resolved, payload={"x": i}, source="bench"))
    t_launched = time.perf_counter()
    outcome = waiting.pipeline_run_wait(run_id=run.pk, timeout=RUN_TIMEOUT, pickup_timeout=RUN_TIMEOUT)
    t1 = time.perf_counter()
    wall1 = time.time()
    done = outcome.run
    if outcome.reason != "finished" or done.status != PipelineRun.Status.COMPLETED:
        raise RuntimeError(f"run {run.pk}: {outcome.reason}, status {done.status}, error {done.error!r}")
    if done.result.get("node_results", {}).get("c", {}).get("output") != {"z": i}:
        raise RuntimeError(f"run {run.pk}: unexpected result {done.result!r}")
    return {
        "e2e_ms": (t1 - t0) * 1000,
        "launch_ms": (t_launched - t0) * 1000,
        "dispatch_ms": (done.started_at.timestamp() - wall0) * 1000,
        "engine_ms": (done.finished_at - done.started_at).total_seconds() * 1000,
        "notice_ms": (wall1 - done.finished_at.timestamp()) * 1000,
        "queries": outcome.queries,
    }


def launcher_latency(config_path: str, n: int) -> dict:
    for i in range(WARMUP):
        launcher_once(config_path, i)
    samples = [launcher_once(config_path, i) for i in range(n)]
    return {key: [s[key] for s in samples] for key in samples[0]}


def launcher_throughput(config_path: str, m: int) -> dict:
    from apps.orchestration import inputs, launch, waiting
    from apps.orchestration.launchrequest import LaunchRequest
    from apps.orchestration.models import PipelineRun

    t0 = time.perf_counter()
    wall0 = time.time()
    ids = []
    for i in range(m):
        resolved = inputs.definition_resolve(config_path=config_path)
        request = LaunchRequest(resolved=resolved, payload={"x": i}, source="bench")
        ids.append(launch.pipeline_run_launch(request=request).pk)
    t_sent = time.perf_counter()
    queries = []
    for run_id in ids:
        outcome = waiting.pipeline_run_wait(run_id=run_id, timeout=RUN_TIMEOUT + m, pickup_timeout=RUN_TIMEOUT + m)
        if outcome.reason != "finished" or outcome.run.status != PipelineRun.Status.COMPLETED:
            raise RuntimeError(f"run {run_id}: {outcome.reason}, status {outcome.run.status}")
        queries.append(outcome.queries)
    elapsed = time.perf_counter() - t0
    last_finished = max(r.finished_at.timestamp() for r in PipelineRun.objects.filter(pk__in=ids))
    return {
        "count": m,
        "seconds": elapsed,
        "per_second": m / elapsed,
        "send_seconds": t_sent - t0,
        "worker_span_seconds": last_finished - wall0,
        "queries": queries,
    }


def _writes(sql: str) -> bool:
    """Whether a statement writes rows: INSERT, UPDATE, DELETE, or a WITH holding one
    (PostgreSQL's one-statement fenced write)."""
    head = sql.lstrip().upper()
    if head.startswith(("INSERT", "UPDATE", "DELETE")):
        return True
    return head.startswith("WITH") and any(word in head for word in ("INSERT INTO", "UPDATE ", "DELETE FROM"))


def launcher_diagnostics(config_path: str) -> dict:
    """Where the time goes, measured in this process (no worker involved)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.broker.embedded import ensure_broker
    from apps.orchestration import engine, events, inputs, launch, waiting
    from apps.orchestration.launchrequest import LaunchRequest

    out: dict = {}
    resolved = inputs.definition_resolve(config_path=config_path)
    # The launcher's database work and messages: queries of one launch (the run is then executed below).
    with CaptureQueriesContext(connection) as launch_q:
        run = launch.pipeline_run_create(request=LaunchRequest(resolved=resolved, payload={"x": 1}, source="bench"))
    out["queries_create"] = len(launch_q.captured_queries)
    # The engine for the same run, inline: what the worker does once the task starts.
    with CaptureQueriesContext(connection) as engine_q:
        start = time.perf_counter()
        engine.run_execute(run_id=run.pk)
        out["engine_inline_ms_first"] = (time.perf_counter() - start) * 1000
    out["queries_engine"] = len(engine_q.captured_queries)
    out["writes_engine"] = sum(1 for q in engine_q.captured_queries if _writes(q["sql"]))
    inline = []
    for i in range(10):
        run = launch.pipeline_run_create(
            request=LaunchRequest(resolved=resolved, payload={"x": i}, source="bench")
        )
        inline.append(timed_ms(lambda run=run: engine.run_execute(run_id=run.pk)))
    out["engine_inline_ms"] = inline
    # The worker closes the DB connection before and after each task (Celery's Django fixup,
    # CONN_MAX_AGE=0), so each task opens one: what does that cost?
    connects = []
    for _ in range(10):
        connection.close()
        connects.append(timed_ms(connection.ensure_connection))
    out["db_connect_ms"] = connects
    # ensure_broker() runs on every launch (a fresh connection + PING when the broker is embedded).
    out["ensure_broker_ms"] = [timed_ms(ensure_broker) for _ in range(20)]
    # Waiting for a run that has already finished: subscribe, read the row, unsubscribe.
    out["wait_finished_ms"] = [timed_ms(lambda: waiting.pipeline_run_wait(run_id=run.pk)) for _ in range(20)]
    # One publish of a wake-up event.
    out["publish_ms"] = [timed_ms(lambda: events.run_event_publish(run_id=0, status="running")) for _ in range(20)]
    return out


# --- floor (raw Celery) -----------------------------------------------------------------

def floor_latency(n: int) -> list[float]:
    from bench.floor_app import noop

    def once():
        noop.apply_async().get(timeout=RUN_TIMEOUT)

    for _ in range(WARMUP):
        once()
    return [timed_ms(once) for _ in range(n)]


def floor_throughput(m: int) -> dict:
    from bench.floor_app import noop

    t0 = time.perf_counter()
    results = [noop.apply_async() for _ in range(m)]
    t_sent = time.perf_counter()
    for result in results:
        result.get(timeout=RUN_TIMEOUT + m)
    elapsed = time.perf_counter() - t0
    return {"count": m, "seconds": elapsed, "per_second": m / elapsed, "send_seconds": t_sent - t0}


def floor_recorded_throughput(m: int) -> dict:
    """Raw Celery's throughput with the statements that record a run (bench/floor_records.py):
    each run inserted and sent, then waited for and read, as launcher_throughput does."""
    from bench import floor_records
    from bench.floor_app import recorded

    t0 = time.perf_counter()
    sent = []
    for i in range(m):
        run_id = floor_records.run_insert({"x": i})
        sent.append((run_id, recorded.apply_async((run_id,))))
    t_sent = time.perf_counter()
    for run_id, result in sent:
        result.get(timeout=RUN_TIMEOUT + m)
        status, _ = floor_records.run_read(run_id)
        if status != "completed":
            raise RuntimeError(f"recorded floor run {run_id}: status {status}")
    elapsed = time.perf_counter() - t0
    return {"count": m, "seconds": elapsed, "per_second": m / elapsed, "send_seconds": t_sent - t0}


def repeated(measure_once, repeats: int, meter: CpuMeter) -> list[dict]:
    """``repeats`` throughput measurements, each with the CPU time it used."""
    out = []
    for _ in range(repeats):
        before = meter.snapshot()
        sample = measure_once()
        sample["cpu_seconds"] = meter.delta(before, meter.snapshot())
        out.append(sample)
    return out


def alternated(sides: dict, repeats: int) -> dict:
    """``repeats`` throughput measurements of each side (key: (measure_once, meter)),
    taken in turn, one of each and again: a machine whose speed drifts while the
    benchmark runs weighs on every side alike, which keeps their ratio fair."""
    out: dict = {key: [] for key in sides}
    for _ in range(repeats):
        for key, (measure_once, meter) in sides.items():
            out[key] += repeated(measure_once, 1, meter)
    return out


# --- CLI --------------------------------------------------------------------------------

def cli_cost(config_path: str, k: int) -> dict:
    """Wall time of `manage.py run_pipeline --config F` versus a bare django.setup() + send_task."""
    env = dict(os.environ)
    cli = [PYTHON, str(ROOT / "manage.py"), "run_pipeline", "--config", config_path]
    bare = [PYTHON, "-c", BARE_SNIPPET]

    def once(cmd, check_queued: bool) -> float:
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        elapsed = (time.perf_counter() - start) * 1000
        if proc.returncode != 0 or (check_queued and "queued" not in proc.stdout):
            raise RuntimeError(f"{cmd[1:]} exited {proc.returncode}: {proc.stdout[-500:]} {proc.stderr[-1500:]}")
        return elapsed

    once(cli, True)  # warm-up: bytecode caches, page cache
    once(bare, False)
    cli_ms, bare_ms = [], []
    for _ in range(k):  # interleaved, so drift in machine load hits both alike
        cli_ms.append(once(cli, True))
        bare_ms.append(once(bare, False))
    return {"cli_ms": cli_ms, "bare_ms": bare_ms}


# --- recovery ---------------------------------------------------------------------------

# The settings that decide how fast a run held by a dead worker is taken over. The workers
# of the recovery measurement get none of them: the point is what a user gets by default.
RECOVERY_SETTINGS = ("RUN_LEASE_SECONDS", "RUN_RECOVERY_INTERVAL_SECONDS", "RUN_RECOVERY_GRACE_SECONDS")
RECOVERY_SLOW_SECONDS = 3.0  # the slow node's CPU sample; the kill lands a third into it
RECOVERY_RUN_TIMEOUT = 240.0  # seconds from a kill until the run must have ended


def recovery(worker_env: dict, workdir: Path, rounds: int, tag: str) -> dict:
    """``rounds`` whole-worker SIGKILLs during a run's slow node, one after another, with
    a survivor worker running; each round's timings (see bench/recovery.py)."""
    from django.conf import settings

    from bench.recovery import KillRig

    if any(name in os.environ for name in RECOVERY_SETTINGS):  # bench/run.py never passes them on
        raise RuntimeError(f"the recovery measurement runs with the defaults: unset {', '.join(RECOVERY_SETTINGS)}")
    env = {k: v for k, v in worker_env.items() if k not in RECOVERY_SETTINGS}
    rig = KillRig(env=env, workdir=workdir, tag=tag, first_seconds=None, slow_seconds=RECOVERY_SLOW_SECONDS,
                  last=False, run_timeout=RECOVERY_RUN_TIMEOUT, source="bench",
                  jitter=settings.RUN_RECOVERY_INTERVAL_SECONDS)
    out: dict = {
        "lease_seconds": settings.RUN_LEASE_SECONDS,
        "interval_seconds": settings.RUN_RECOVERY_INTERVAL_SECONDS,
        "grace_seconds": settings.RUN_RECOVERY_GRACE_SECONDS,
        "slow_seconds": RECOVERY_SLOW_SECONDS,
        "rounds": [],
    }
    try:
        out["survivor_ready_s"] = rig.start()
        for index in range(rounds):
            sample = rig.round(index, "slow")
            log(f"recovery round {index + 1}/{rounds}: run {sample['run_id']} completed "
                f"{sample['recovery_s']:.1f}s after the kill (lease left {sample['lease_left_s']:.1f}s, "
                f"re-published at {sample['republished_s']:.1f}s)")
            out["rounds"].append(sample)
    finally:
        rig.stop()
    return out


# --- main -------------------------------------------------------------------------------

def runs_clear() -> None:
    """Empty the benchmark database's runs and stages. On PostgreSQL with
    TRUNCATE: a DELETE leaves every row behind dead, and with autovacuum off
    (as on the machine these figures come from) dead rows pile up from one
    benchmark to the next and slow every statement on the tables."""
    from django.db import connection

    from apps.orchestration.models import PipelineRun, StageExecution

    if connection.vendor == "postgresql":
        tables = ", ".join(connection.ops.quote_name(m._meta.db_table) for m in (StageExecution, PipelineRun))
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {tables} CASCADE")
    else:
        PipelineRun.objects.all().delete()


def child_setup(broker: str, on_sigterm) -> None:
    """What every bench child does first: stop through ``on_sigterm`` (so its finally
    blocks stop its workers), name its broker in its log lines, set Django up, and
    keep the project's own log lines to warnings."""
    import logging

    import django

    signal.signal(signal.SIGTERM, on_sigterm)
    os.environ["BENCH_BROKER"] = broker
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    for name in ("apps", "workers", "celery"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", required=True, choices=["embedded", "redis"])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--throughput", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--recovery-rounds", type=int, default=5)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _on_sigterm)
    os.environ["BENCH_BROKER"] = args.broker
    workdir = Path(args.workdir)

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    import logging

    from django.conf import settings

    # The workers log at the configured level; this process only reports problems.
    for name in ("apps", "workers", "celery"):
        logging.getLogger(name).setLevel(logging.WARNING)

    from apps.broker.embedded import EmbeddedBroker
    from workers.celery import app as project_app

    config_path = workdir / "three-transforms.json"
    config_path.write_text(json.dumps(PIPELINE))
    config_path = str(config_path)
    result: dict = {
        "broker": args.broker,
        "broker_url": settings.CELERY_BROKER_URL,
        "database": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
        "runs": args.runs,
        "throughput_count": args.throughput,
        "throughput_repeats": args.repeats,
    }
    runs_clear()  # a benchmark-only database: start from empty tables

    worker_env = {k: v for k, v in os.environ.items() if k != "BENCH_BROKER"}
    floor_env = {k: v for k, v in worker_env.items() if k != "DJANGO_SETTINGS_MODULE"}
    floor_env["PYTHONPATH"] = str(ROOT)
    # The recorded floor's tables: in the launcher's PostgreSQL database, or a SQLite file of their own.
    database = settings.DATABASES["default"]
    if result["database"] == "postgresql":
        floor_env["BENCH_FLOOR_DATABASE"] = os.environ["DATABASE_URL"]
    else:
        floor_env["BENCH_FLOOR_DATABASE"] = str(Path(database["NAME"]).with_name("floor.sqlite3"))
    os.environ["BENCH_FLOOR_DATABASE"] = floor_env["BENCH_FLOOR_DATABASE"]
    from bench import floor_records

    floor_records.reset()
    tag = f"{os.getpid()}"

    def pg_sessions() -> int | None:
        """Sessions ever opened on this PostgreSQL database (None on SQLite)."""
        from django.db import connection

        if connection.vendor != "postgresql":
            return None
        with connection.cursor() as cursor:
            cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
            return cursor.fetchone()[0]

    sessions_before = pg_sessions()

    # 1-5: one 2-process worker of the project and, beside it on the same broker (a queue of
    # its own), the floor: a plain Celery app's 2-process worker.
    from bench.floor_app import app as floor_app

    worker = Worker(app="workers", name=f"bench-launcher-{tag}@bench", env=worker_env,
                    log_path=workdir / "worker-launcher.log")
    floor = Worker(app="bench.floor_app", name=f"bench-floor-default-{tag}@bench", env=floor_env,
                   log_path=workdir / "worker-floor-default.log")
    # The recorded floor: raw Celery + a run's statements, with the launcher's delivery settings.
    from bench.floor_app import RECORDED_QUEUE

    recorded = Worker(app="bench.floor_app", name=f"bench-floor-recorded-{tag}@bench",
                      env={**floor_env, "BENCH_FLOOR_DELIVERY": "project"}, queues=RECORDED_QUEUE,
                      log_path=workdir / "worker-floor-recorded.log")
    try:
        worker.start()
        if settings.CELERY_BROKER_IS_EMBEDDED:
            broker = EmbeddedBroker(Path(settings.EMBEDDED_BROKER_DIR))
            deadline = time.monotonic() + READY_TIMEOUT
            while not broker.is_running():  # the worker starts it (worker_init -> ensure_broker)
                if time.monotonic() > deadline or worker.proc.poll() is not None:
                    raise RuntimeError(f"the embedded broker did not come up; see {worker.log_path}")
                time.sleep(0.05)
            result["embedded_broker_pid"] = broker.pid()
        result["launcher_worker_ready_s"] = worker.wait_ready(project_app)
        log(f"launcher worker ready in {result['launcher_worker_ready_s']:.1f}s; latency x{args.runs}")
        result["launcher"] = launcher_latency(config_path, args.runs)
        floor.start()
        log(f"floor worker (default delivery) ready in {floor.wait_ready(floor_app):.1f}s")
        result["floor_rt_ms"] = floor_latency(args.runs)
        recorded.start()
        log(f"recorded floor worker ready in {recorded.wait_ready(floor_app):.1f}s")
        floor_recorded_throughput(WARMUP)
        log(f"throughput {args.repeats} x {args.throughput}, the launcher, the floor and the recorded floor in turn")
        broker_pid = result.get("embedded_broker_pid")
        result.update(alternated({
            "launcher_throughput": (lambda: launcher_throughput(config_path, args.throughput),
                                    CpuMeter(worker_pid=worker.proc.pid, broker_pid=broker_pid)),
            "floor_throughput": (lambda: floor_throughput(args.throughput),
                                 CpuMeter(worker_pid=floor.proc.pid, broker_pid=broker_pid)),
            "floor_recorded_throughput": (lambda: floor_recorded_throughput(args.throughput),
                                          CpuMeter(worker_pid=recorded.proc.pid, broker_pid=broker_pid)),
        }, args.repeats))
    finally:
        try:
            recorded.stop()
        finally:
            try:
                floor.stop()
            finally:
                worker.stop()
    if sessions_before is not None:
        # the worker's sessions are counted when they end; the worker has stopped
        executed = WARMUP + args.runs + args.repeats * args.throughput
        result["pg_sessions_per_run"] = (pg_sessions() - sessions_before) / executed
    log("diagnostics (in-process)")
    result["diagnostics"] = launcher_diagnostics(config_path)

    # 5, the floor again with the launcher's delivery settings (acks_late, prefetch 1).
    worker = Worker(app="bench.floor_app", name=f"bench-floor-project-{tag}@bench",
                    env={**floor_env, "BENCH_FLOOR_DELIVERY": "project"}, log_path=workdir / "worker-floor-project.log")
    try:
        worker.start()
        log(f"floor worker (project delivery) ready in {worker.wait_ready(floor_app):.1f}s")
        floor_throughput(WARMUP)
        log(f"floor throughput (project delivery) {args.repeats} x {args.throughput}")
        meter = CpuMeter(worker_pid=worker.proc.pid, broker_pid=result.get("embedded_broker_pid"))
        result["floor_project_delivery_throughput"] = repeated(
            lambda: floor_throughput(args.throughput), args.repeats, meter
        )
    finally:
        worker.stop()

    # 6: the CLI, with no worker running (both sides only enqueue).
    log(f"CLI cost x{args.cli_runs}")
    result["cli"] = cli_cost(config_path, args.cli_runs)
    if settings.CELERY_BROKER_IS_EMBEDDED:
        result["embedded_broker_still_pid"] = EmbeddedBroker(Path(settings.EMBEDDED_BROKER_DIR)).pid()

    # 7: a whole worker killed mid-run, a survivor completes the run (default settings).
    if args.recovery_rounds > 0:
        log(f"recovery after a whole-worker SIGKILL x{args.recovery_rounds} (about a minute each)")
        result["recovery"] = recovery(worker_env, workdir, args.recovery_rounds, tag)

    Path(args.out).write_text(json.dumps(result, indent=1))
    log(f"done: p50 e2e {statistics.median(result['launcher']['e2e_ms']):.1f} ms, "
        f"floor {statistics.median(result['floor_rt_ms']):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
