"""What routing a run to a host queue costs: a run launched for a host
(``run_pipeline --host bench-host``) next to one sent to the shared queue.

Per broker, a fresh environment of its own (a temp dir; for ``redis`` the
PostgreSQL database PG_DATABASE, so no other benchmark's runs or workers
share it) and ONE real worker started with ``MONITOR_HOST=bench-host``, which
consumes both the shared queue and ``host.bench-host``. The child first
checks that a host-targeted run's message really waits in ``host.bench-host``
(the worker's consumer of that queue is cancelled for the check, then added
back), then launches ``--runs`` runs of each kind of the 3-node transform
pipeline, interleaved (the order of each pair alternates), each one launched
as ``run_pipeline`` launches it (``launch_targets`` + ``pipeline_runs_launch``)
and waited for in-process.

    python -m bench.hosts --broker embedded --workdir /tmp/bbXXXX --out hosts.json --runs 100   # the child

bench/run.py runs it for each broker (``--hosts-only`` for nothing else) and
puts its section, "Host queues", in docs/benchmarks.md (run.replace_section);
it always stops the worker (the child's finally) and the
embedded broker, and flushes the Redis database it used.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HOST = "bench-host"
PG_DATABASE = "bench_hosts"  # its own database: a worker's sweep would take over another benchmark's runs
TITLE = "## Host queues"
CHILD_TIMEOUT = 300  # seconds for start-up, the routing check and stopping, plus RUN_SECONDS per run
RUN_SECONDS = 2
BOOTSTRAP = 2000  # resamples for the interval of the p50 difference


def log(message: str) -> None:
    print(f"[bench hosts {os.environ.get('BENCH_BROKER', '?')}] {message}", file=sys.stderr, flush=True)


# --- the child: one broker -----------------------------------------------------------------

def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # runs the finally block that stops the worker


def _launch_once(config_path: str, i: int, host: str | None) -> dict:
    """One run launched as `run_pipeline --config F [--host HOST] --wait` launches it, waited for in-process."""
    from apps.orchestration import inputs, launch, targeting, waiting
    from apps.orchestration.launchrequest import LaunchRequest
    from apps.orchestration.models import PipelineRun
    from bench.measure import RUN_TIMEOUT

    wall0 = time.time()
    t0 = time.perf_counter()
    resolved = inputs.definition_resolve(config_path=config_path)
    payload = {"x": i}
    targets = targeting.launch_targets(host=host, resolved=resolved, payload=payload, source="bench")
    request = LaunchRequest(resolved=resolved, payload=payload, source="bench")
    (run,) = launch.pipeline_runs_launch(targets=targets, request=request)
    outcome = waiting.pipeline_run_wait(run_id=run.pk, timeout=RUN_TIMEOUT, pickup_timeout=RUN_TIMEOUT)
    t1 = time.perf_counter()
    done = outcome.run
    if outcome.reason != "finished" or done.status != PipelineRun.Status.COMPLETED:
        raise RuntimeError(f"run {run.pk}: {outcome.reason}, status {done.status}, error {done.error!r}")
    if done.target_host != (host or ""):
        raise RuntimeError(f"run {run.pk}: target host {done.target_host!r}, expected {host!r}")
    if done.result.get("node_results", {}).get("c", {}).get("output") != {"z": i}:
        raise RuntimeError(f"run {run.pk}: unexpected result {done.result!r}")
    return {"e2e_ms": (t1 - t0) * 1000, "dispatch_ms": (done.started_at.timestamp() - wall0) * 1000}


def _routing_check(app, worker_name: str, config_path: str) -> dict:
    """Check that a run for HOST waits in host.HOST and nowhere else while the worker does not
    consume that queue, and that the worker executes it once it does again."""
    from apps.hostnames import host_queue
    from apps.orchestration import dispatch, inputs, launch, targeting, waiting
    from apps.orchestration.launchrequest import LaunchRequest
    from apps.orchestration.models import PipelineRun
    from bench.measure import RUN_TIMEOUT

    queue = host_queue(HOST)
    consumed = {q["name"] for q in (app.control.inspect([worker_name], timeout=2).active_queues() or {})
                .get(worker_name, [])}
    if not {"celery", queue} <= consumed:
        raise RuntimeError(f"worker {worker_name} consumes {sorted(consumed)}, expected celery and {queue}")
    app.control.cancel_consumer(queue, destination=[worker_name], reply=True, timeout=5)
    try:
        resolved = inputs.definition_resolve(config_path=config_path)
        targets = targeting.launch_targets(host=HOST, resolved=resolved, payload={"x": -1}, source="bench")
        request = LaunchRequest(resolved=resolved, payload={"x": -1}, source="bench")
        (run,) = launch.pipeline_runs_launch(targets=targets, request=request)
        deadline = time.monotonic() + 5
        while dispatch.queue_length(host=HOST) != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        in_host, in_shared = dispatch.queue_length(host=HOST), dispatch.queue_length()
        status = PipelineRun.objects.get(pk=run.pk).status
        if (in_host, in_shared, status) != (1, 0, PipelineRun.Status.QUEUED):
            raise RuntimeError(f"routing check: {in_host} message(s) in {queue}, {in_shared} in celery, "
                               f"run {run.pk} {status}; expected 1, 0, queued")
    finally:
        app.control.add_consumer(queue, destination=[worker_name], reply=True, timeout=5)
    outcome = waiting.pipeline_run_wait(run_id=run.pk, timeout=RUN_TIMEOUT, pickup_timeout=RUN_TIMEOUT)
    if outcome.run.status != PipelineRun.Status.COMPLETED:
        raise RuntimeError(f"routing check: run {run.pk} {outcome.reason}, status {outcome.run.status}")
    return {"queues": sorted(consumed), "waiting_in_host_queue": in_host, "waiting_in_shared_queue": in_shared}


def child_main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", required=True, choices=["embedded", "redis"])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    from bench.measure import child_setup

    child_setup(args.broker, _on_sigterm)
    workdir = Path(args.workdir)

    from django.conf import settings

    from bench.measure import PIPELINE, WARMUP, Worker, runs_clear
    from workers.celery import app

    runs_clear()  # this benchmark's own database
    config_path = workdir / "three-transforms.json"
    config_path.write_text(json.dumps(PIPELINE))
    config_path = str(config_path)

    env = {k: v for k, v in os.environ.items() if k != "BENCH_BROKER"}
    env["MONITOR_HOST"] = HOST
    worker = Worker(app="workers", name=f"bench-hosts-{os.getpid()}@bench", env=env,
                    log_path=workdir / "worker-hosts.log")
    result: dict = {
        "broker": args.broker,
        "database": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
        "host": HOST, "runs": args.runs, "warmup": WARMUP,
    }
    shared: list[dict] = []
    hosted: list[dict] = []
    try:
        worker.start()
        result["worker_ready_s"] = worker.wait_ready(app)
        result["routing_check"] = _routing_check(app, worker.name, config_path)
        for i in range(WARMUP):
            _launch_once(config_path, i, None)
            _launch_once(config_path, i, HOST)
        log(f"worker ready in {result['worker_ready_s']:.1f}s; {args.runs} runs per side, interleaved")
        for i in range(args.runs):
            # Alternate which side goes first, so neither always follows the other.
            order = ((None, shared), (HOST, hosted)) if i % 2 == 0 else ((HOST, hosted), (None, shared))
            for host, samples in order:
                samples.append(_launch_once(config_path, i, host))
    finally:
        worker.stop()
    for name, samples in (("shared", shared), ("host", hosted)):
        result[name] = {key: [s[key] for s in samples] for key in ("e2e_ms", "dispatch_ms")}
    Path(args.out).write_text(json.dumps(result, indent=1))
    log("done")
    return 0


# --- the parent: bench/run.py -----------------------------------------------------------------

def wanted(args) -> bool:
    """Whether bench/run.py measures the host queues with these arguments."""
    return args.hosts_only or not (args.no_hosts or args.schedule_only or args.drain_only or args.alerts_only)


def measure_hosts(broker: str, args) -> dict:
    """One broker's samples, measured by the child in a fresh environment of its own."""
    from bench import run as bench

    return bench.measure_in_child(
        broker, args, module="bench.hosts", label="host queues", options=["--runs", str(args.runs)],
        timeout=CHILD_TIMEOUT + RUN_SECONDS * args.runs, database=PG_DATABASE,
    )


def _median_difference_interval(host: list[float], shared: list[float]) -> tuple[float, float]:
    """A 95% bootstrap interval of p50(host) - p50(shared) (fixed seed: the same samples give the same text)."""
    from bench.run import pct

    rng = random.Random(0)
    diffs = sorted(
        pct(rng.choices(host, k=len(host)), 50) - pct(rng.choices(shared, k=len(shared)), 50)
        for _ in range(BOOTSTRAP)
    )
    return pct(diffs, 2.5), pct(diffs, 97.5)


HOW_MEASURED = """\
Per broker, in a fresh environment like the ones above but of its own (for
`redis` the PostgreSQL database `{database}`, so no other benchmark's worker
can sweep its runs), one real worker (`celery -A workers worker -P prefork -c
2 --without-mingle --without-gossip -l info`) started with
`MONITOR_HOST={host}` consumes the shared queue `celery` and its host queue
`host.{host}`. First a check that routing happens: with the worker's consumer
of `host.{host}` cancelled (Celery remote control), a run launched for the
host must leave one message in `host.{host}` and none in `celery`, and
complete once the consumer is added back. Then {warmup} warm-up runs of each
kind and {runs} measured runs of each kind of the 3-node `transform` pipeline,
interleaved (shared then host, host then shared, alternately), each launched
as `run_pipeline --config F [--host {host}] --wait` launches it
(`definition_resolve` + `launch_targets` + `pipeline_runs_launch`, then
`pipeline_run_wait`, in-process, no CLI start-up). Every run must complete
with the expected result and its `target_host`. End-to-end is the wall clock
from before `definition_resolve` to the wait's return; dispatch is
`started_at` minus the wall clock before the launch. The added p50 is the
host runs' p50 minus the shared runs'; its 95% interval comes from {bootstrap}
bootstrap resamples of each side: an interval that holds 0 means no
difference these samples can tell from noise. Compare the two kinds within
this table only: the launch path here includes `launch_targets`, and other
processes on the machine (see the load average) move every number together.
"""


def report(results: dict[str, dict], args, facts: dict, elapsed: float) -> tuple[str, str]:
    """The table, and the "Host queues" section of docs/benchmarks.md."""
    from bench.run import _markdown, pct

    brokers = list(results)
    S = {}
    for b in brokers:
        r = results[b]
        s = {side: {key: (pct(r[side][key], 50), pct(r[side][key], 95)) for key in ("e2e_ms", "dispatch_ms")}
             for side in ("shared", "host")}
        s["added_p50"] = s["host"]["e2e_ms"][0] - s["shared"]["e2e_ms"][0]
        s["added_p95"] = s["host"]["e2e_ms"][1] - s["shared"]["e2e_ms"][1]
        s["interval"] = _median_difference_interval(r["host"]["e2e_ms"], r["shared"]["e2e_ms"])
        s["r"] = r
        S[b] = s

    def cells(fmt) -> list[str]:
        return [fmt(S[b]) for b in brokers]

    def p50_p95(side, key):
        return lambda s: f"{s[side][key][0]:.1f} / {s[side][key][1]:.1f}"

    rows = [
        ("database", cells(lambda s: s["r"]["database"])),
        ("shared queue (`celery`): end-to-end, p50 / p95 (ms)", cells(p50_p95("shared", "e2e_ms"))),
        (f"host queue (`--host {HOST}`): end-to-end, p50 / p95 (ms)", cells(p50_p95("host", "e2e_ms"))),
        ("added by the host queue: host minus shared, p50 (ms)", cells(lambda s: f"{s['added_p50']:+.2f}")),
        ("  95% interval of that p50 difference (ms)",
         cells(lambda s: f"{s['interval'][0]:+.2f} to {s['interval'][1]:+.2f}")),
        ("added by the host queue: host minus shared, p95 (ms)", cells(lambda s: f"{s['added_p95']:+.2f}")),
        ("dispatch (before launch -> started_at), shared / host, p50 (ms)",
         cells(lambda s: f"{s['shared']['dispatch_ms'][0]:.1f} / {s['host']['dispatch_ms'][0]:.1f}")),
        ("runs measured per side (interleaved) / warm-ups per side",
         cells(lambda s: f"{len(s['r']['shared']['e2e_ms'])} / {s['r']['warmup']}")),
        ("queues the worker consumed", cells(lambda s: ", ".join(s["r"]["routing_check"]["queues"]))),
    ]
    table = _markdown(["host queue vs shared queue (3 transform nodes)", *brokers], [[m, *v] for m, v in rows])
    noise = [b for b in brokers if S[b]["interval"][0] <= 0 <= S[b]["interval"][1]]
    told = [b for b in brokers if b not in noise]
    verdict = " ".join(filter(None, [
        f"On {' and '.join(noise)} the interval holds 0: no difference these samples can measure." if noise else "",
        " ".join(f"On {b} the host queue's p50 differs by {S[b]['added_p50']:+.2f} ms "
                 f"(interval {S[b]['interval'][0]:+.2f} to {S[b]['interval'][1]:+.2f} ms)." for b in told),
    ]))
    if args.hosts_only:
        command = (f".venv/bin/python bench/run.py --hosts-only --runs {args.runs} --brokers {','.join(brokers)}"
                   f" --redis-db {args.redis_db}")
        when = (f"Measured on its own on {facts['date']} (took {elapsed:.0f} s), not in the run that produced "
                f"the sections above; re-run:\n\n    {command}\n\n"
                f"Same machine; load average before / after: {facts['load_before']} / {facts['load_after']}.")
    else:
        when = "Measured in the same run as the sections above."
    how = HOW_MEASURED.format(database=PG_DATABASE, host=HOST, runs=args.runs, warmup=results[brokers[0]]["warmup"],
                              bootstrap=BOOTSTRAP)
    return table, f"{TITLE}\n\n{when}\n\n{table}\n\n{verdict}\n\n{how}"


if __name__ == "__main__":
    sys.exit(child_main())
