"""The alert path: Alertmanager's webhook posts to the real web service at a steady rate.

Per broker, a fresh environment of its own (a temp dir; for ``redis`` the
PostgreSQL database PG_DATABASE). The child stores a definition whose
``triggers`` take every Alertmanager alert (one cheap ``transform`` node),
starts the deployment's processes with ``scripts/worker.sh start`` (worker,
beat and the web service: gunicorn with config/gunicorn.py on a free port of
127.0.0.1; the worker serves the host the alerts name), creates an API key
with ``manage.py create_api_key --scope alerts``, and then sends

    POST /api/v1/alerts/alertmanager   Authorization: Bearer <key>
    a 10-alert Alertmanager group (webhook format 4)   -> 202 {"runs": [...], "deduplicated": [...], "unmatched": N}

open-loop: request i is due at start + i / rate, sent from a pool of threads
(each with its own keep-alive connection) whatever the earlier ones are
doing, and its latency runs from that due time to the end of the answer, so a
server that falls behind shows in the numbers instead of slowing the sender.
Two series, one after the other:

- ``new``: every request carries fingerprints of its own (a new alert group),
  so each one starts a run; the time from the POST to the run's start is the
  run's ``started_at`` (read from the database) minus the wall clock just
  before the request was sent;
- ``repeat``: one group sent again and again (Alertmanager's re-sends), which
  the receiver deduplicates: no run, the existing run under ``deduplicated``.

A build without the receiver fails at once with a message saying so (the
endpoint answers 404). The child always stops what worker.sh started.

    python -m bench.alerts --broker embedded --workdir /tmp/bbX --out alerts.json --requests 500 --rate 50  # the child
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_DATABASE = "bench_alerts"  # its own database: a worker's sweep would take over another benchmark's runs
TITLE = "## Alert path"
HOST = "bench-alerts"  # the host the alerts name (instance label); the worker serves its queue
DEFINITION = "bench-alert-triage"
PATH = "/api/v1/alerts/alertmanager"
ALERTS_PER_REQUEST = 10
WARMUP = 20  # requests sent one after another before the series (connections, caches, the worker's pool)
SENDERS = 64  # threads sending; a request finds one free unless 64 answers are outstanding
SCRIPT_TIMEOUT = 180  # seconds for one worker.sh call
REQUEST_TIMEOUT = 30  # seconds one answer may take
RUNS_TIMEOUT = 180  # seconds, after the last answer, for every run to end
CHILD_TIMEOUT = 600  # seconds for start-up, warm-up, waiting for runs and stopping, plus the series
P50_MAX_MS, P99_MAX_MS = 15.0, 50.0  # targets, to the answer

ALERT_DEFINITION = {
    "version": "1.0",
    "description": "benchmark: every Alertmanager alert starts one cheap run",
    "triggers": [{"alert": {"source": "alertmanager", "on": ["firing"], "dedup_seconds": 3600}}],
    "nodes": [{"id": "shape", "type": "transform",
               "config": {"mapping": {"status": "payload.status"}, "defaults": {"status": ""}}}],
}


def log(message: str) -> None:
    print(f"[bench alerts {os.environ.get('BENCH_BROKER', '?')}] {message}", file=sys.stderr, flush=True)


class BenchFailure(RuntimeError):
    """The benchmark cannot measure: a clear message, no traceback needed."""


# --- the child: one broker -----------------------------------------------------------------

def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # runs the finally block that stops worker.sh's processes


def alert_group(group: str, fingerprint_seed: str) -> dict:
    """An Alertmanager notification (webhook format 4) of ALERTS_PER_REQUEST firing alerts
    about HOST, its group key from ``group`` and its fingerprints from ``fingerprint_seed``."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    common = {"alertname": "DiskFilling", "instance": f"{HOST}:9100", "job": "node", "severity": "warning"}
    alerts = [{
        "status": "firing",
        "labels": {**common, "device": f"sd{chr(97 + j)}", "group": group},
        "annotations": {"summary": f"Disk sd{chr(97 + j)} on {HOST} is filling up"},
        "startsAt": now, "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example.com:9090/graph?g0.expr=node_filesystem_avail_bytes",
        "fingerprint": f"{fingerprint_seed}{j:04x}"[-16:].rjust(16, "0"),
    } for j in range(ALERTS_PER_REQUEST)]
    return {
        "version": "4", "status": "firing", "receiver": "pipelines", "truncatedAlerts": 0,
        "groupKey": f'{{}}:{{alertname="DiskFilling", group="{group}"}}',
        "groupLabels": {"alertname": "DiskFilling", "group": group},
        "commonLabels": {**common, "group": group}, "commonAnnotations": {},
        "externalURL": "http://alertmanager.example.com:9093", "alerts": alerts,
    }


class Sender:
    """POSTs bodies to the web service, one keep-alive connection per thread."""

    def __init__(self, port: int, key: str | None):
        self.port, self.key = port, key
        self.local = threading.local()

    def post(self, body: bytes, *, auth: bool = True) -> tuple[int, bytes, float]:
        """Status, answer body and the wall clock just before sending (time.time());
        reconnects once when a kept-alive connection was closed by the server."""
        headers = {"Content-Type": "application/json"}
        if auth and self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        for attempt in (1, 2):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
            sent = time.time()
            try:
                conn.request("POST", PATH, body=body, headers=headers)
                answer = conn.getresponse()
                return answer.status, answer.read(), sent
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def open_loop(sender: Sender, bodies: list[bytes], rate: float) -> list[dict]:
    """Send ``bodies`` at ``rate`` per second on a fixed schedule; per request: its due time,
    send time, latency from the due time to the end of the answer (ms), status and answer."""
    results: list[dict | None] = [None] * len(bodies)

    def one(i: int, due: float, due_wall: float) -> None:
        status, raw, sent = sender.post(bodies[i])
        done = time.perf_counter()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {"raw": raw[:200].decode(errors="replace")}
        results[i] = {"latency_ms": (done - due) * 1000, "late_ms": (sent - due_wall) * 1000,
                      "sent": sent, "status": status, "answer": answer}

    with ThreadPoolExecutor(max_workers=SENDERS) as pool:
        start, start_wall = time.perf_counter() + 0.2, time.time() + 0.2
        futures = []
        for i in range(len(bodies)):
            due = start + i / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            futures.append(pool.submit(one, i, due, start_wall + i / rate))
        for future in futures:
            future.result(timeout=REQUEST_TIMEOUT * 2)
    return [r for r in results if r is not None]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago (gunicorn binds it soon after)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_sh(command: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "worker.sh"), command], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=SCRIPT_TIMEOUT)


def create_key(env: dict) -> str:
    """A new API key with scope alerts, from `manage.py create_api_key` (the longest token of
    its output: the key it prints once)."""
    name = f"bench-alerts-{os.getpid()}-{int(time.time())}"
    made = subprocess.run([sys.executable, str(ROOT / "manage.py"), "create_api_key", name, "--scope", "alerts"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    if made.returncode != 0:
        raise BenchFailure(f"manage.py create_api_key failed (exit {made.returncode}): {made.stderr.strip()[-500:]}")
    tokens = re.findall(r"[A-Za-z0-9_\-.~+/=]{40,}", made.stdout)
    if not tokens:
        raise BenchFailure("found no key in the output of manage.py create_api_key")
    return max(tokens, key=len)


def check_receiver(sender: Sender) -> None:
    """Fail with a clear message unless the receiver exists and refuses a request without a key."""
    status, raw, _ = sender.post(json.dumps(alert_group("probe", "ffff")).encode(), auth=False)
    if status == 404:
        raise BenchFailure(f"POST {PATH} answered 404: this build has no alert receiver (the API of issue 20), "
                           "so there is nothing to measure")
    if status != 401:
        raise BenchFailure(f"POST {PATH} without a key answered {status}, expected 401: {raw[:300]!r}")


def wait_for_runs(run_ids: list[int]) -> dict[int, dict]:
    """started_at, finished_at and status of every run in ``run_ids`` once each has ended
    (BenchFailure when RUNS_TIMEOUT passes first)."""
    from apps.orchestration.models import PipelineRun

    ended = {PipelineRun.Status.COMPLETED, PipelineRun.Status.FAILED, PipelineRun.Status.CANCELLED}
    deadline = time.monotonic() + RUNS_TIMEOUT
    while True:
        rows = {row["pk"]: row for row in PipelineRun.objects.filter(pk__in=run_ids)
                .values("pk", "status", "started_at", "finished_at", "trigger")}
        if len(rows) == len(run_ids) and all(row["status"] in ended for row in rows.values()):
            return rows
        if time.monotonic() >= deadline:
            left = sum(1 for row in rows.values() if row["status"] not in ended)
            raise BenchFailure(f"{left + len(run_ids) - len(rows)} of {len(run_ids)} runs not ended "
                               f"after {RUNS_TIMEOUT}s")
        time.sleep(0.25)


def child_main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", required=True, choices=["embedded", "redis"])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0)
    args = parser.parse_args()
    from bench.measure import child_setup

    child_setup(args.broker, _on_sigterm)
    workdir = Path(args.workdir)

    from django.conf import settings

    from apps.orchestration.models import PipelineDefinition
    from bench.measure import runs_clear

    runs_clear()  # this benchmark's own database
    PipelineDefinition.objects.update_or_create(name=DEFINITION, defaults={"config": ALERT_DEFINITION})
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "BENCH_BROKER"}
    env.update({"WORKER_STATE_DIR": str(workdir / "state"), "WEB_BIND": f"127.0.0.1:{port}",
                "MONITOR_HOST": HOST, "LOG_FORMAT": "text"})
    result: dict = {
        "broker": args.broker, "database": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
        "requests": args.requests, "rate": args.rate, "alerts_per_request": ALERTS_PER_REQUEST,
        "warmup": WARMUP, "web": {k: os.environ.get(k, "") for k in ("WEB_CONCURRENCY", "WEB_THREADS")},
    }
    try:
        started = worker_sh("start", env)
        if started.returncode != 0:
            raise BenchFailure(f"scripts/worker.sh start failed (exit {started.returncode}): "
                               f"{(started.stdout + started.stderr).strip()[-800:]}")
        log(started.stdout.strip().replace("\n", "; "))
        check_receiver(Sender(port, None))
        sender = Sender(port, create_key(env))
        for i in range(WARMUP):
            status, raw, _ = sender.post(json.dumps(alert_group(f"warmup-{i}", f"e{i:07x}")).encode())
            if status != 202:
                raise BenchFailure(f"warm-up request answered {status}: {raw[:300]!r}")
        log(f"{args.requests} new groups at {args.rate:g}/s, then {args.requests} repeats of one group")
        # Groups and fingerprints of this run only: a database kept from an earlier run holds its
        # groups' dedup records, which would turn this run's "new" groups into repeats.
        nonce = secrets.token_hex(2)
        new_bodies = [
            json.dumps(alert_group(f"{nonce}-new-{i}", f"{nonce}{i + 1:08x}")).encode() for i in range(args.requests)
        ]
        result["new"] = open_loop(sender, new_bodies, args.rate)
        repeat = json.dumps(alert_group(f"{nonce}-repeat", f"{nonce}abcd0000")).encode()
        first = sender.post(repeat)  # the one that starts the run the repeats are deduplicated to
        result["repeat_first"] = {"status": first[0], "answer": json.loads(first[1])}
        result["repeat"] = open_loop(sender, [repeat] * args.requests, args.rate)
        run_ids = sorted({rid for r in result["new"] if r["status"] == 202 for rid in r["answer"].get("runs", [])})
        rows = wait_for_runs(run_ids)
        for r in result["new"]:
            starts = [rows[rid]["started_at"] for rid in r["answer"].get("runs", []) if rows[rid]["started_at"]]
            r["to_start_ms"] = [(s.timestamp() - r["sent"]) * 1000 for s in starts]
        result["run_statuses"] = {}
        for row in rows.values():
            result["run_statuses"][row["status"]] = result["run_statuses"].get(row["status"], 0) + 1
        result["run_triggers"] = sorted({row["trigger"] for row in rows.values()})
    except BenchFailure as exc:
        log(f"FAILED: {exc}")
        return 1
    finally:
        stopped = worker_sh("stop", env)
        log(stopped.stdout.strip().replace("\n", "; "))
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    log("done")
    return 0


# --- the parent: bench/run.py -----------------------------------------------------------------

def wanted(args) -> bool:
    """Whether bench/run.py measures the alert path with these arguments."""
    return args.alerts_only or not (args.no_alerts or args.schedule_only or args.hosts_only or args.drain_only)


def measure_alerts(broker: str, args) -> dict:
    """One broker's samples, measured by the child in a fresh environment of its own."""
    from bench import run as bench

    return bench.measure_in_child(
        broker, args, module="bench.alerts", label="alert path",
        options=["--requests", str(args.alert_requests), "--rate", str(args.alert_rate)],
        timeout=CHILD_TIMEOUT + 2 * args.alert_requests / args.alert_rate, database=PG_DATABASE,
    )


HOW_MEASURED = """\
Per broker, in a fresh environment of its own (for `redis` the PostgreSQL
database `{database}` and Redis as the broker; for `embedded` a SQLite file and
the embedded broker), a definition whose `triggers` take every Alertmanager
alert (one `transform` node) is stored, and `scripts/worker.sh start` starts
the deployment's processes as on a laptop: a worker (`MONITOR_HOST={host}`,
the host the alerts name), beat, and the web service (gunicorn with
`config/gunicorn.py`, WEB_CONCURRENCY / WEB_THREADS as set: {web}) on a free
port of 127.0.0.1. A key is made with `manage.py create_api_key --scope
alerts`. Each request is `POST {path}` with `Authorization: Bearer <key>` and
an Alertmanager notification (webhook format 4) of {alerts} firing alerts,
{size} bytes. After {warmup} warm-up requests one after another, {requests}
requests are sent open-loop at {rate:g}/s: request i is due at the start +
i / {rate:g} s and handed to one of {senders} sending threads (each with its
own keep-alive connection) at that time, whatever the earlier requests are
doing; its latency runs from the due time to the end of the answer, so time
spent queued behind a slow server counts. Series `new`: every request is a
new group (its own group key and fingerprints), answered 202 with one run;
"POST -> run started" is that run's `started_at` (written by the worker, read
from the database once every run has ended) minus the wall clock just before
the request was sent (one host clock). Series `repeat`: one group, sent once
to start its run, then {requests} times at the same rate: each must be
answered 202 with no new run and that run under `deduplicated` (Alertmanager's
re-sends). Targets, to the answer: p50 <= {p50:g} ms, p99 <= {p99:g} ms. The
processes are stopped with `scripts/worker.sh stop`.
"""


def _summary(r: dict) -> dict:
    from bench.run import pct

    s: dict = {}
    for series in ("new", "repeat"):
        samples = r[series]
        latency = [x["latency_ms"] for x in samples]
        statuses: dict[int, int] = {}
        for x in samples:
            statuses[x["status"]] = statuses.get(x["status"], 0) + 1
        s[series] = {"p50": pct(latency, 50), "p99": pct(latency, 99), "max": max(latency),
                     "late_max": max(x["late_ms"] for x in samples), "statuses": statuses,
                     "span_s": (samples[-1]["sent"] - samples[0]["sent"]) if len(samples) > 1 else 0.0}
    to_start = [t for x in r["new"] for t in x.get("to_start_ms", [])]
    s["to_start"] = (pct(to_start, 50), pct(to_start, 99), max(to_start)) if to_start else None
    s["runs_per_request"] = sorted({len(x["answer"].get("runs", [])) for x in r["new"] if x["status"] == 202})
    first_runs = r["repeat_first"]["answer"].get("runs", [])
    s["dedup_ok"] = sum(1 for x in r["repeat"] if x["status"] == 202 and not x["answer"].get("runs")
                        and x["answer"].get("deduplicated") == first_runs)
    return s


def report(results: dict[str, dict], args, facts: dict, elapsed: float) -> tuple[str, str, list[str]]:
    """The table, the "Alert path" section of docs/benchmarks.md and the missed targets."""
    from bench.run import _markdown

    brokers = list(results)
    S = {b: _summary(results[b]) for b in brokers}

    def cells(fmt) -> list[str]:
        return [fmt(S[b]) for b in brokers]

    def met(check) -> str:
        return " / ".join("yes" if check(S[b]) else "**NO**" for b in brokers)

    def statuses(series):
        return lambda s: ", ".join(f"{code}: {n}" for code, n in sorted(s[series]["statuses"].items()))

    n = args.alert_requests
    for b in brokers:
        S[b]["database"] = results[b]["database"]
        S[b]["runs"] = ", ".join(f"{k}: {v}" for k, v in sorted(results[b]["run_statuses"].items()))
    rows = [
        ("database", cells(lambda s: s["database"]), "-", "-"),
        ("new groups: answer, p50 / p99 / max (ms)",
         cells(lambda s: f"{s['new']['p50']:.1f} / {s['new']['p99']:.1f} / {s['new']['max']:.1f}"),
         f"p50 <= {P50_MAX_MS:g}, p99 <= {P99_MAX_MS:g}",
         met(lambda s: s["new"]["p50"] <= P50_MAX_MS and s["new"]["p99"] <= P99_MAX_MS)),
        ("new groups: POST -> run started_at, p50 / p99 / max (ms)",
         cells(lambda s: "-" if s["to_start"] is None else " / ".join(f"{x:.1f}" for x in s["to_start"])), "-", "-"),
        ("new groups: answers by status / runs per answer",
         cells(lambda s: f"{statuses('new')(s)} / {s['runs_per_request']}"), f"202: {n}",
         met(lambda s: s["new"]["statuses"] == {202: n})),
        ("repeats (deduplicated): answer, p50 / p99 / max (ms)",
         cells(lambda s: f"{s['repeat']['p50']:.1f} / {s['repeat']['p99']:.1f} / {s['repeat']['max']:.1f}"),
         f"p50 <= {P50_MAX_MS:g}, p99 <= {P99_MAX_MS:g}",
         met(lambda s: s["repeat"]["p50"] <= P50_MAX_MS and s["repeat"]["p99"] <= P99_MAX_MS)),
        ("repeats: answered 202 with no run, the first run deduplicated",
         cells(lambda s: f"{s['dedup_ok']} of {n}"), f"{n} of {n}", met(lambda s: s["dedup_ok"] == n)),
        ("sender: latest send after its due time, new / repeat (ms)",
         cells(lambda s: f"{s['new']['late_max']:.1f} / {s['repeat']['late_max']:.1f}"), "-", "-"),
        ("runs started by the new groups, by status", cells(lambda s: s["runs"]), "all completed",
         met(lambda s: s["runs"].startswith("completed") and "," not in s["runs"])),
    ]
    header = [f"alert path: {ALERTS_PER_REQUEST}-alert Alertmanager POSTs at {args.alert_rate:g}/s",
              *brokers, "target", "met (" + " / ".join(brokers) + ")"]
    table = _markdown(header, [[m, *v, t, ok] for m, v, t, ok in rows])
    missed = []
    for b in brokers:
        s = S[b]
        for series in ("new", "repeat"):
            if s[series]["p50"] > P50_MAX_MS or s[series]["p99"] > P99_MAX_MS:
                missed.append(f"{b}: alert path ({series}) p50 {s[series]['p50']:.1f} ms / p99 "
                              f"{s[series]['p99']:.1f} ms > {P50_MAX_MS:g} / {P99_MAX_MS:g} ms")
        if s["new"]["statuses"] != {202: n} or s["dedup_ok"] != n:
            missed.append(f"{b}: alert path answers {s['new']['statuses']}, "
                          f"{s['dedup_ok']} of {n} repeats deduplicated")
        if set(results[b]["run_statuses"]) != {"completed"}:
            missed.append(f"{b}: alert runs {results[b]['run_statuses']}")
    if args.alerts_only:
        command = (f".venv/bin/python bench/run.py --alerts-only --alert-requests {n} --alert-rate {args.alert_rate:g}"
                   f" --brokers {','.join(brokers)} --redis-db {args.redis_db}")
        when = (f"Measured on its own on {facts['date']} (took {elapsed:.0f} s), not in the run that produced "
                f"the sections above; re-run:\n\n    {command}\n\n"
                f"Same machine; load average before / after: {facts['load_before']} / {facts['load_after']}.")
    else:
        when = "Measured in the same run as the sections above."
    first = results[brokers[0]]
    how = HOW_MEASURED.format(
        database=PG_DATABASE, host=HOST, path=PATH, alerts=ALERTS_PER_REQUEST, warmup=first["warmup"],
        requests=n, rate=args.alert_rate, senders=SENDERS, p50=P50_MAX_MS, p99=P99_MAX_MS,
        size=len(json.dumps(alert_group("new-0", "00000001"))),
        web=" / ".join(v or "default" for v in first["web"].values()),
    )
    verdict = ("Targets missed: " + "; ".join(missed) + ".") if missed else "Targets met."
    return table, f"{TITLE}\n\n{when}\n\n{table}\n\n{verdict}\n\n{how}", missed


if __name__ == "__main__":
    sys.exit(child_main())
