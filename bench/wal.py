"""Write volume of a typical run on PostgreSQL: the WAL a 3-node run writes,
from its launch to its end, and the WAL of one run whose node outputs 1 MB (NODE_MAX_OUTPUT_BYTES=100000000
in the environment: as it was without the cut).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/i21bounds python -m bench.wal --runs 200

Runs in this process, as ``run_pipeline --inline`` does: the launcher stores
the run, the engine claims it and writes each node's stage and the run's end
with the same statements a worker makes (no broker is involved). The WAL is
``pg_current_wal_lsn()`` before and after all the runs, divided by the runs;
the database's own background writes (autovacuum, checkpoints) in between
count too, so it is an upper bound, and so do every other database's writes:
use a PostgreSQL server nobody else writes to (an ``initdb`` of your own
started with ``pg_ctl -o "-p 55433 -c autovacuum=off"``). Uses the database of
DATABASE_URL, which must be PostgreSQL and migrated; it leaves its runs there.

Measured (PostgreSQL 15, a private server, 200 typical runs, 20 large):
typical 3-node run 12.0-13.7 KB of WAL either way; a run whose node outputs
1 MB of random hex 3.22 MB without the cut, 1.09 MB with it (the 1 MB payload,
stored once, is the rest).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The health-check pipeline: checks of this host, the local analysis, a console notice.
TYPICAL = [
    {"id": "metrics", "type": "context", "config": {"include": ["cpu", "memory", "disk"]}, "next": "analyze"},
    {"id": "analyze", "type": "intelligence", "config": {"provider": "local"}, "next": "notify"},
    {"id": "notify", "type": "notify", "config": {"driver": "console"}},
]
# One node whose output is the payload's blob: as large as the payload.
LARGE = [{"id": "big", "type": "transform", "config": {"mapping": {"blob": "payload.blob"}}}]


def _wal_per_run(name: str, nodes: list, payload: dict, runs: int) -> dict:
    import io
    from contextlib import redirect_stdout

    from django.db import connection

    from apps.orchestration import engine, inputs, launch, launchrequest
    from apps.orchestration.models import PipelineDefinition

    PipelineDefinition.objects.update_or_create(name=name, defaults={"config": {"version": "1.0", "nodes": nodes}})
    request = launchrequest.LaunchRequest(resolved=inputs.definition_resolve(name=name), payload=payload)

    def one() -> None:
        run = launch.pipeline_run_create(request=request)
        with redirect_stdout(io.StringIO()):  # the console driver prints its notice
            done = engine.run_execute(run_id=run.pk)
        assert done is not None and done.status == "completed", (done and done.error)

    one()  # warm: connections, prepared statements, imports
    with connection.cursor() as cursor:
        cursor.execute("CHECKPOINT")  # full-page images after a checkpoint are the same for every measure
        cursor.execute("SELECT pg_current_wal_lsn()")
        before = cursor.fetchone()[0]
        started = time.perf_counter()
        for _ in range(runs):
            one()
        seconds = time.perf_counter() - started
        cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", [before])
        wal = int(cursor.fetchone()[0])
    return {
        "pipeline": name, "runs": runs, "wal_bytes_per_run": round(wal / runs),
        "ms_per_run": round(seconds / runs * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="typical runs measured (default 200)")
    parser.add_argument("--large-runs", type=int, default=20, help="runs with a 1 MB node output (default 20)")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    if connection.vendor != "postgresql":
        raise SystemExit("bench.wal measures PostgreSQL's WAL: set DATABASE_URL to a PostgreSQL database")
    settings.RUN_MAX_PAYLOAD_BYTES = max(settings.RUN_MAX_PAYLOAD_BYTES, 2 * 1024 * 1024)
    results = [
        _wal_per_run("wal-typical", TYPICAL, {}, args.runs),
        # Random hex: compresses about as badly as real text does (a run of "x" would compress to nothing).
        _wal_per_run("wal-large-output", LARGE, {"blob": secrets.token_hex(500_000)}, args.large_runs),
    ]
    print(json.dumps({"node_max_output_bytes": settings.NODE_MAX_OUTPUT_BYTES, "results": results}, indent=2))


if __name__ == "__main__":
    main()
