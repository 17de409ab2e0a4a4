"""What `when` and the monitoring state cost a 3-node run: queries and CPU per
run, against the same pipeline without them, executed by the engine in this
process (no broker, no worker: only the run's own work is measured).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_monitoring python -m bench.monitoring --runs 200

The pipelines (a memory check, a transform, a console notify):

- plain       no `when`, notify_on always (today's definitions)
- when        a `when` on the transform and on the notify, not naming `state`
- state       notify_on change, and a `when` on the notify naming `state`

Every run finds a severity (the memory check's), so every variant writes the
state board at its end. The no-severity case (three transforms) is shown too:
it writes no state. Migrates the database and deletes its runs and state
first (it must be the bench's own). Prints one JSON object.

With ``--logs`` the log lines are written (to /dev/null, as a worker writes
them to its log) and each variant runs twice: with its lines kept with the
run (apps/orchestration/runlogs.py) and with a buffer that keeps none of
them, so the difference is what keeping them costs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHECK = {"id": "metrics", "type": "context", "config": {"include": ["memory"]}, "next": "shape"}
SHAPE = {"id": "shape", "type": "transform", "config": {"mapping": {"used": "metrics.checks.memory.value"}},
         "next": "notify"}
NOTIFY = {"id": "notify", "type": "notify", "config": {"driver": "console"}}
VARIANTS = {
    "plain": [CHECK, SHAPE, NOTIFY],
    "when": [CHECK, {**SHAPE, "when": 'checks.memory.status != "critical"'},
             {**NOTIFY, "when": "results.shape.used >= 0.0"}],
    "state": [CHECK, SHAPE, {**NOTIFY, "when": "state.severity != \"critical\" || state.changed",
                             "config": {"driver": "console", "notify_on": "change"}}],
    "no severity (3 transforms)": [
        {"id": "a", "type": "transform", "config": {"mapping": {"x": "payload.x"}}, "next": "b"},
        {"id": "b", "type": "transform", "config": {"mapping": {"y": "a.x"}}, "next": "c"},
        {"id": "c", "type": "transform", "config": {"mapping": {"z": "b.y"}}},
    ],
}


def _nothing_kept(**kwargs):
    """runlogs.run_logs_captured's stand-in for the baseline: a buffer attached to no logger that keeps nothing."""
    from contextlib import nullcontext

    from apps.orchestration.runlogs import RunLogBuffer

    class Keeping(RunLogBuffer):
        def keep(self, record) -> None:
            return None

    return nullcontext(Keeping(run_id=kwargs["run_id"], next_seq=1, limit=0, now=kwargs["now"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="runs per variant (default 200)")
    parser.add_argument("--logs", action="store_true", help="log, and compare runs keeping their lines with not")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import logging

    import django

    django.setup()
    if not args.logs:
        logging.disable(logging.CRITICAL)  # the console driver's message and the engine's lines are not the bench's
    else:
        from apps.orchestration import runlogs

        devnull = open(os.devnull, "w")  # open for the whole bench
        for sink in runlogs._sink_loggers():
            for handler in sink.handlers:
                if isinstance(handler, logging.StreamHandler):
                    handler.setStream(devnull)
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.orchestration import engine, inputs, launch, launchrequest
    from apps.orchestration.models import MonitorNotice, MonitorState, PipelineDefinition, PipelineRun

    call_command("migrate", verbosity=0)
    PipelineRun.objects.all().delete()
    MonitorState.objects.all().delete()
    MonitorNotice.objects.all().delete()
    results: dict = {"database": connection.vendor, "runs_per_variant": args.runs, "variants": {}}
    variants = list(VARIANTS.items())
    if args.logs:
        variants = [(f"{name}, lines {how}", nodes) for name, nodes in variants for how in ("kept", "not kept")]
    kept = engine.run_logs_captured
    for name, nodes in variants:
        if args.logs:
            engine.run_logs_captured = _nothing_kept if name.endswith("not kept") else kept
        definition = f"bench-monitoring-{len(results['variants'])}"
        PipelineDefinition.objects.update_or_create(name=definition,
                                                    defaults={"config": {"version": "1.0", "nodes": nodes}})
        queries, cpu, statements = [], [], None
        for index in range(args.runs + 5):
            run = launch.pipeline_run_create(request=launchrequest.LaunchRequest(
                resolved=inputs.definition_resolve(name=definition), payload={"x": index}))
            connection.queries_log.clear()  # a full log (9,000 queries) would count none
            started = time.process_time()
            with CaptureQueriesContext(connection) as captured:
                done = engine.run_execute(run_id=run.pk)
            spent = (time.process_time() - started) * 1000
            assert done is not None and done.status == "completed", (name, done and done.error)
            if index >= 5:  # the first runs warm the caches (compiled expressions, prepared SQL)
                queries.append(len(captured.captured_queries))
                cpu.append(spent)
                statements = statements or [q["sql"][:100] for q in captured.captured_queries]
        results["variants"][name] = {
            "queries_per_run": statistics.median(queries),
            "cpu_ms_per_run_p50": round(statistics.median(cpu), 3),
            "cpu_ms_per_run_mean": round(statistics.fmean(cpu), 3),
            "statements": statements,
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
