"""The cost of a /metrics scrape on an empty and a grown database, in one run.

    .venv/bin/python bench/metrics_scrape.py --empty postgres://.../empty --grown postgres://.../grown [--fold]

Each database must be migrated; the grown one filled beforehand (a million runs
with generate_series, and the rollup as their ends left it: see the report of
issue 21). For each database a child process (Django set up on it, METRICS_PUBLIC=1)
scrapes /metrics through Django's request handler ``--scrapes`` times after 5
warm-ups and prints one JSON line: the latency p50/p95/max in ms, the process's CPU
time per scrape (p50, ms: less noisy on a shared machine; the database's own time is
not in it), the body's size, the number of series, the rows of the rollup, and the
plan of the queue gauges' query. Nothing is written, except with ``--fold``: the
grown database's rollup is folded first (rollup_fold, as beat's entry does every
minute: the same values in one row per series).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(scrapes: int, fold: bool) -> dict:
    """Scrape ``scrapes`` times in this process (Django set up here); the measurements."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import connection
    from django.test import Client

    from apps.orchestration.models import NodeTally, PipelineRun, RunTally
    from apps.orchestration.rollup import rollup_fold

    if fold:
        rollup_fold()
    client = Client(SERVER_NAME="127.0.0.1")  # a host the settings allow
    for _ in range(5):
        assert client.get("/metrics").status_code == 200
    times, cpu, body = [], [], b""
    for _ in range(scrapes):
        started, cpu_started = time.perf_counter(), time.process_time()
        response = client.get("/metrics")
        times.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - cpu_started) * 1000)
        assert response.status_code == 200
        body = response.content
    times.sort()
    explain = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN "
    with connection.cursor() as cursor:
        cursor.execute(
            explain + "SELECT COUNT(*), MIN(created_at) FROM orchestration_pipelinerun WHERE status = 'queued'"
        )
        plan = " / ".join(str(row[-1]).strip() for row in cursor.fetchall())
    return {
        "runs": PipelineRun.objects.count(),
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 2),
        "max_ms": round(times[-1], 2),
        "cpu_p50_ms": round(statistics.median(cpu), 2),
        "rollup_rows": RunTally.objects.count() + NodeTally.objects.count(),
        "bytes": len(body),
        "series": sum(1 for line in body.splitlines() if line and not line.startswith(b"#")),
        "queue_plan": plan,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--empty", required=True, help="DATABASE_URL of a migrated, empty database")
    parser.add_argument("--grown", required=True, help="DATABASE_URL of the grown database")
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--fold", action="store_true", help="fold the grown database's rollup first")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.scrapes, args.fold)))
        return
    results = {}
    for name, url in (("empty", args.empty), ("grown", args.grown)):
        env = {**os.environ, "DATABASE_URL": url, "METRICS_PUBLIC": "1", "LOG_LEVEL": "WARNING"}
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--scrapes", str(args.scrapes), "--empty", url, "--grown", url,
             *(["--fold"] if args.fold and name == "grown" else [])],
            env=env, capture_output=True, text=True, timeout=600, check=True,
        ).stdout
        results[name] = json.loads(out.strip().splitlines()[-1])
    print("| /metrics | empty | grown | target |")
    print("|---|---|---|---|")
    print(f"| stored runs | {results['empty']['runs']:,} | {results['grown']['runs']:,} | |")
    for key, label, target in (("p50_ms", "p50 (ms)", ""), ("p95_ms", "p95 (ms)", "<= 50"),
                               ("max_ms", "max (ms)", ""), ("cpu_p50_ms", "CPU p50 (ms, this process)", ""),
                               ("bytes", "body (bytes)", "<= 1,000,000"), ("series", "series", ""),
                               ("rollup_rows", "rollup rows", "")):
        print(f"| {label} | {results['empty'][key]:,} | {results['grown'][key]:,} | {target} |")
    print(f"\nqueue gauges' plan, grown: {results['grown']['queue_plan']}")


if __name__ == "__main__":
    main()
