"""Where a worker's CPU goes per run: cProfile of a real worker executing runs.

    .venv/bin/python bench/profile_worker.py [--brokers embedded,redis] [--runs 300] [--top 25]
                                             [--redis-db 9] [--stats-dir DIR] [--cpu-clock]

Per broker, in the same kind of fresh environment as bench/run.py (a temp dir;
SQLite + the embedded broker, or Redis + PostgreSQL), a worker of the project
(`celery -A workers worker -P solo`: the task runs in the process that also
talks to the broker, so one profile holds both) executes 20 warm-up runs of
the benchmark's 3-node transform pipeline, then ``--runs`` runs launched back
to back and waited for. The profiler (cProfile on its default clock, wall
time, so waits for the database and the broker show in the entries that
wait; with ``--cpu-clock`` on CPU time, ``time.process_time``, whose own
overhead is much larger) is on from the first task after the warm-ups to the
worker's shutdown. It prints the top entries by own time and by cumulative
time, in microseconds per run (the profiler's overhead included: compare
entries with each other), and the worker's CPU time per run without the
profiler is measured in a second, unprofiled round.

Nothing here changes the worker: the profiler is added by a wrapper
(``python -m bench.profile_worker worker ...``) that connects to Celery's
task_prerun and worker_shutdown signals and then runs the worker as
``celery worker`` would. Every process it starts is stopped in ``finally``.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = ROOT / ".venv" / "bin"
PYTHON = str(BIN / "python") if (BIN / "python").exists() else sys.executable
WARMUP_RUNS = 20
READY_TIMEOUT = 60
STOP_TIMEOUT = 30


def log(message: str) -> None:
    print(f"[profile] {message}", file=sys.stderr, flush=True)


# --- the worker wrapper (in the worker's own process) ----------------------------------------

def worker_main(stats_path: str, flag_path: str, argv: list[str]) -> None:
    """Run a Celery worker of the project with cProfile on from the first task
    started once ``flag_path`` exists, to the worker's shutdown."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from celery.signals import task_prerun, worker_shutdown

    profiler = cProfile.Profile(time.process_time) if os.environ.get("PROFILE_CPU_CLOCK") else cProfile.Profile()
    state = {"on": False}

    @task_prerun.connect(weak=False)
    def _start(**kwargs):
        if not state["on"] and os.path.exists(flag_path):
            state["on"] = True
            profiler.enable()

    @worker_shutdown.connect(weak=False)
    def _stop(**kwargs):
        if state["on"]:
            profiler.disable()
            profiler.dump_stats(stats_path)

    from workers.celery import app

    app.worker_main(argv)


# --- the measuring child (environment of one broker) -------------------------------------------

def child_main(args) -> int:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    import logging

    import psutil

    from apps.orchestration import inputs, launch, waiting
    from apps.orchestration.launchrequest import LaunchRequest
    from apps.orchestration.models import PipelineRun
    from bench.measure import PIPELINE, runs_clear
    from workers.celery import app as project_app

    for name in ("apps", "workers", "celery"):
        logging.getLogger(name).setLevel(logging.WARNING)
    workdir = Path(args.workdir)
    config_path = workdir / "three-transforms.json"
    config_path.write_text(json.dumps(PIPELINE))
    resolved = inputs.definition_resolve(config_path=str(config_path))
    runs_clear()
    result: dict = {}

    def runs(count: int) -> None:
        launched = [
            launch.pipeline_run_launch(request=LaunchRequest(resolved=resolved, payload={"x": i}, source="bench")).pk
            for i in range(count)
        ]
        for run_id in launched:
            outcome = waiting.pipeline_run_wait(run_id=run_id, timeout=120)
            if outcome.run.status != PipelineRun.Status.COMPLETED:
                raise RuntimeError(f"run {run_id} ended {outcome.run.status}: {outcome.run.error}")

    for profiled in (True, False):
        tag = "profiled" if profiled else "plain"
        name = f"profile-{tag}-{os.getpid()}@bench"
        flag = workdir / f"{tag}.flag"
        stats = workdir / f"{tag}.prof"
        celery_args = ["worker", "-P", "solo", "-n", name, "-l", "info", "--without-mingle", "--without-gossip"]
        if profiled:
            cmd = [PYTHON, "-m", "bench.profile_worker", "worker", str(stats), str(flag), *celery_args]
        else:
            cmd = [str(BIN / "celery"), "-A", "workers", *celery_args]
        with open(workdir / f"worker-{tag}.log", "ab") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=os.environ.copy(), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while not project_app.control.ping(destination=[name], timeout=0.5):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"worker {name} not ready; see {workdir}")
            runs(WARMUP_RUNS)
            flag.touch()
            worker = psutil.Process(proc.pid)
            cpu = worker.cpu_times()
            start = time.perf_counter()
            runs(args.runs)
            elapsed = time.perf_counter() - start
            after = worker.cpu_times()
            result[tag] = {
                "runs": args.runs,
                "worker_cpu_ms_per_run": ((after.user + after.system) - (cpu.user + cpu.system)) * 1000 / args.runs,
                "runs_per_s": args.runs / elapsed,
            }
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        if profiled:
            if not stats.exists():
                raise RuntimeError(f"the worker wrote no profile; see {workdir}")
            result["stats"] = str(stats)
    Path(args.out).write_text(json.dumps(result))
    return 0


# --- report ------------------------------------------------------------------------------------

def top_entries(stats_path: str, runs: int, top: int) -> str:
    """Markdown tables of the top entries by own time and by cumulative time, in µs per run."""
    stats = pstats.Stats(stats_path, stream=io.StringIO())
    rows = []
    for (filename, line, func), (_cc, nc, tt, ct, _) in stats.stats.items():
        where = filename.replace(str(ROOT) + "/", "")
        for marker in ("site-packages/", "lib/python3"):
            if marker in where:
                where = where.split(marker, 1)[1]
                break
        rows.append((f"{where}:{line}({func})" if line else func, nc, tt, ct))
    total = sum(r[2] for r in rows)
    lines = [f"total CPU in the profile: {total * 1e6 / runs:.0f} µs per run ({runs} runs)", ""]
    for title, key in (("own time", 2), ("cumulative time", 3)):
        lines += [f"| by {title}: function | calls per run | own µs per run | cumulative µs per run |",
                  "|---|---|---|---|"]
        for name, nc, tt, ct in sorted(rows, key=lambda r: r[key], reverse=True)[:top]:
            lines.append(f"| `{name}` | {nc / runs:.1f} | {tt * 1e6 / runs:.0f} | {ct * 1e6 / runs:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", default="embedded,redis")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--redis-db", type=int, default=9)
    parser.add_argument("--stats-dir", help="keep each broker's .prof file here")
    parser.add_argument("--cpu-clock", action="store_true", help="profile CPU time instead of wall time")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--broker", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args)

    from bench.run import clean_up, prepare, run_child

    for broker in args.brokers.split(","):
        workdir = Path(tempfile.mkdtemp(prefix="bp", dir="/tmp"))
        ok = False
        try:
            env = prepare(broker, workdir, args.redis_db)
            if args.cpu_clock:
                env["PROFILE_CPU_CLOCK"] = "1"
            out = workdir / "result.json"
            cmd = [PYTHON, "-m", "bench.profile_worker", "--child", "--broker", broker, "--workdir", str(workdir),
                   "--out", str(out), "--runs", str(args.runs)]
            log(f"{broker}: {WARMUP_RUNS} warm-up runs, then {args.runs} profiled and {args.runs} plain")
            result = run_child(cmd, env, out, 900, f"{broker}: the profile")
            print(f"\n### {broker}\n")
            for tag in ("profiled", "plain"):
                r = result[tag]
                print(f"- {tag} worker (-P solo): {r['worker_cpu_ms_per_run']:.2f} ms CPU per run, "
                      f"{r['runs_per_s']:.1f} runs/s")
            print()
            print(top_entries(result["stats"], result["profiled"]["runs"], args.top))
            if args.stats_dir:
                Path(args.stats_dir).mkdir(parents=True, exist_ok=True)
                shutil.copy(result["stats"], Path(args.stats_dir) / f"{broker}.prof")
            ok = True
        finally:
            clean_up(broker, args, workdir, ok=ok)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker_main(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit(main())
