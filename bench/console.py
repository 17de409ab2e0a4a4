"""Page timings of the operator console: its pages' server time, empty and with 100,000 runs.

    .venv/bin/python bench/console.py [--databases postgresql,sqlite] [--runs-postgresql 100000]
                                      [--runs-sqlite 100000] [--backlog 10] [--tries 30] [--reuse] [--drop]
                                      [--pg-prefix bench_console] [--redis-dbs 12,13] [--title Console]
                                      [--no-doc] [--json PATH]

The databases are bench/scale.py's, built by its build child (``scale.prepare``):
per database kind an "empty" one (the 2,003 definitions and 2,000 schedules, no
run) and a "grown" one (the same plus ``--runs-*`` finished runs with their
stages and ``--backlog`` queued runs). PostgreSQL databases are
``<--pg-prefix>_empty`` / ``_grown``, SQLite files live in ``var/console/``;
``--reuse`` keeps a grown one built earlier with the same sizes (so
``--pg-prefix bench_scale --backlog 10000 --runs-postgresql 1000000 --reuse``
measures scale.py's own PostgreSQL database).

A child process per database (``python -m bench.console --child measure``)
signs in as a superuser and GETs each page in-process with Django's test
client, ``--tries`` times (``scale.repeat``: fewer once ``--budget`` seconds
have gone, a call cut at ``--limit`` seconds): the runs list (no filter;
status failed; the busiest definition; a host; a search by trace id; the next
page through its "Older runs" link), the list's live rows as the open page
polls them (unchanged: 204), a completed and a failed run's page and their
live part, the definitions list, the busiest definition's page and the
schedules list. On the empty database the run pages are of one run inserted for
the purpose (the grown build's SQL, one row) and deleted afterwards. Each
answer is checked (status, the nodes of the timeline). The parent prints the
table and rewrites the "Console" section of docs/benchmarks.md (``--title``). The Redis
databases of ``--redis-dbs`` are flushed at the end (no message is sent).
"""
from __future__ import annotations

import argparse
import html
import json
import os
import re
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path
from urllib.parse import quote, urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import scale  # noqa: E402 - after the path is set

TITLE = "Console"  # the section of docs/benchmarks.md it rewrites, unless --title
TARGET_MS = 100  # p95 of every page at the grown size
SQLITE_DIR = ROOT / "var" / "console"
MEASURE_TIMEOUT = 1800
HOST = "host-007"


def log(message: str) -> None:
    print(f"[bench console] {message}", file=sys.stderr, flush=True)


# --- measuring: the child --------------------------------------------------------------------------

def _get(client, url: str, expect: int = 200) -> tuple[dict, str]:
    """GET ``url``; the facts (bytes, status) and the body. Raises RuntimeError for another status."""
    response = client.get(url)
    if response.status_code != expect:
        raise RuntimeError(f"{url} answered {response.status_code}, not {expect} ({response.get('Location', '')})")
    body = response.content.decode()
    return {"bytes": len(response.content), "status": response.status_code}, body


def _attribute(body: str, pattern: str, what: str) -> str:
    """The (HTML-unescaped) first group of ``pattern`` in ``body``; RuntimeError naming ``what`` if absent."""
    match = re.search(pattern, body)
    if match is None:
        raise RuntimeError(f"the page has no {what}")
    return html.unescape(match[1])


def _check_run_page(body: str, statuses: list[str]) -> None:
    """A run page shows its timeline: the snapshot's three nodes with ``statuses``, each node
    that ended with its display lines. RuntimeError otherwise (the build's runs would not look real)."""
    shown = re.findall(r'<li class="node node-([a-z-]+)" data-node-id="([^"]+)"', body)
    if [status for status, _ in shown] != statuses:
        raise RuntimeError(f"the run page shows nodes {shown}, not {statuses}")
    ended = sum(status in ("succeeded", "failed") for status in statuses)
    if body.count('<pre class="node-lines">') != ended:
        raise RuntimeError("a node that ended has no display lines on the run page")


def _sample_run_insert(connection) -> int:
    """One finished run and its stages, as the grown build makes them (its SQL, one row); its id."""
    from apps.orchestration.models import PipelineDefinition, PipelineRun

    def_ids = {int(name.rsplit("-", 1)[1]): pk for name, pk in PipelineDefinition.objects.filter(
        name__in=[scale.definition_name(i) for i in range(scale.DEFINITIONS_WITH_RUNS)]).values_list("name", "pk")}
    newest = PipelineRun.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    sql = scale._Sql(connection.vendor)
    scale.insert_runs(1, queued=False, sql=sql, def_ids=def_ids, now=time.time(), connection=connection)
    scale.insert_stages(newest, sql=sql, connection=connection)
    return PipelineRun.objects.filter(pk__gt=newest).values_list("pk", flat=True).get()


def _queries(connection, fn) -> dict:
    """The SQL statements one call of ``fn`` makes: how many, and their time (ms, as Django logs it)."""
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        fn()
    return {"count": len(captured.captured_queries),
            "ms": sum(float(query["time"]) for query in captured.captured_queries) * 1000}


def measure_main(args) -> int:
    """The child that times every console page on one prepared database; writes JSON to --out."""
    from bench.measure import child_setup

    child_setup("console", lambda signum, frame: (_ for _ in ()).throw(SystemExit(128 + signum)))
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.db.models import Count

    from apps.orchestration.models import PipelineRun, StageExecution

    warnings.filterwarnings("ignore", message="No directory at")  # no collectstatic: the pages need no file
    user, _ = get_user_model().objects.get_or_create(
        username="bench-console", defaults={"is_staff": True, "is_superuser": True, "email": ""})
    client = scale._client()
    client.force_login(user)
    finished = PipelineRun.objects.exclude(status=PipelineRun.Status.QUEUED)
    busiest = (finished.values("definition_name").annotate(n=Count("pk")).order_by("-n")
               .values_list("definition_name", flat=True).first()) or scale.definition_name(0)
    # A trace id from the middle of the history (none on the empty database: a search that finds nothing).
    middle = finished.order_by("pk").values_list("trace_id", flat=True)[finished.count() // 2:][:1]
    trace = next(iter(middle), "0123456789abcdef0123456789abcdef")
    result: dict = {"label": args.label, "vendor": connection.vendor, "grown": args.grown,
                    "runs": PipelineRun.objects.count(), "stages": StageExecution.objects.count(),
                    "busiest": busiest, "ops": {}}
    kw = {"tries": args.tries, "budget": args.budget, "limit": args.limit, "connection": connection}

    def run(key: str, label: str, url: str, expect: int = 200) -> None:
        log(f"{args.label}: {label}")
        cpu: list[float] = []

        def once() -> dict:
            # This process's CPU time besides the wall clock: on a busy machine the wall clock is
            # mostly waiting for a CPU, the CPU time is what the page costs (the SQL server's aside).
            began = time.process_time()
            try:
                return _get(client, url, expect)[0]
            finally:
                cpu.append((time.process_time() - began) * 1000)

        op = scale.repeat(f"{args.label} {label}", once, **kw)
        op["cpu_ms"] = cpu[1:] if op["first_ms"] is not None else cpu  # the same tries as samples_ms
        op["queries"] = _queries(connection, lambda: _get(client, url, expect)) if not op["stopped"] else None
        result["ops"][key] = {"label": label, "url": url, **op}

    lists = (("list", "runs list", ""), ("list status", "runs list, status failed", "status=failed"),
             ("list definition", f"runs list, definition {busiest}", urlencode({"definition": busiest})),
             ("list host", f"runs list, host {HOST}", urlencode({"host": HOST})),
             ("list search", "runs list, search by trace id", urlencode({"q": trace})))
    for key, label, query in lists:
        run(key, label, f"/runs/{'?' + query if query else ''}")
    _, first = _get(client, "/runs/")
    if 'id="older"' in first:
        run("list older", "runs list, the older page", "/runs/" + _attribute(first, r'id="older" href="([^"]+)"',
                                                                             "older link"))
    run("rows", "live rows, unchanged (204)", _attribute(first, r'id="run-rows" hx-get="([^"]+)"', "live rows"), 204)
    typed = busiest[:4]
    run("suggestions", f"definition suggestions for {typed!r}",
        "/runs/definitions/?" + urlencode({"definition": typed}))

    made = None
    if not finished.filter(status=PipelineRun.Status.COMPLETED).exists():
        made = _sample_run_insert(connection)
    try:
        pages = (("completed", ["succeeded"] * 3), ("failed", ["succeeded", "failed", "not-reached"]))
        for status, nodes in pages:
            run_id = (finished.filter(status=status).order_by("-pk").values_list("pk", flat=True).first()
                      if made is None or status == "completed" else None)
            if run_id is None:
                continue  # the empty database's one run is completed
            _, body = _get(client, f"/runs/{run_id}/")
            _check_run_page(body, nodes)
            stages = StageExecution.objects.filter(run_id=run_id).count()
            run(f"run {status}", f"run page, {status} ({stages} stages)", f"/runs/{run_id}/")
            run(f"live {status}", f"run page's live part, {status}", f"/runs/{run_id}/live/")
    finally:
        if made is not None:
            PipelineRun.objects.filter(pk=made).delete()
    # The first page (100 by name) of the definitions and of the schedules, and one definition's page.
    for key, label, url in (("definitions", "definitions list", "/definitions/"),
                            ("definition", f"definition page, {busiest}", f"/definitions/{quote(busiest)}/"),
                            ("schedules", "schedules list", "/schedules/")):
        run(key, label, url)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


# --- the parent ----------------------------------------------------------------------------------

def measure(env: dict, args) -> dict:
    from bench.run import PYTHON, run_child

    with tempfile.TemporaryDirectory(prefix="console") as tmp:
        out = Path(tmp) / "measure.json"
        cmd = [PYTHON, "-m", "bench.console", "--child", "measure", "--label", env["label"], "--out", str(out),
               "--tries", str(args.tries), "--budget", str(args.budget), "--limit", str(args.limit)]
        if env["grown"]:
            cmd.append("--grown")
        return run_child(cmd, scale.child_env(env), out, MEASURE_TIMEOUT, f"{env['label']}: measurements")


def _cell(op: dict | None) -> str:
    if op is None:
        return "—"
    text = scale._cell(op, "")
    if op.get("cpu_ms") and op["samples_ms"]:
        text += f" (CPU {scale._pct(op['cpu_ms'], 50):.0f} / {scale._pct(op['cpu_ms'], 95):.0f})"
    queries = op.get("queries")
    return f"{text}, {queries['count']} queries ({queries['ms']:.0f} ms)" if queries else text


def _within(op: dict | None) -> str:
    if op is None:
        return "—"
    ok = op["samples_ms"] and not op.get("stopped") and scale._pct(op["samples_ms"], 95) <= TARGET_MS
    return "yes" if ok else "no"


def build_table(results: dict) -> tuple[str, list[str]]:
    """The Markdown table: each page, per database, empty and grown, and whether the grown one is within target."""
    from bench.run import _markdown

    rows, missed = [], []
    for vendor in ("postgresql", "sqlite"):
        empty, grown = results.get(f"{vendor} empty"), results.get(f"{vendor} grown")
        if not (empty and grown):
            continue
        for key, op in grown["ops"].items():
            verdict = _within(op)
            rows.append([op["label"], vendor, _cell(empty["ops"].get(key)), _cell(op), f"p95 ≤ {TARGET_MS} ms",
                         verdict])
            if verdict == "no":
                missed.append(f"{op['label']} on {vendor}")
    table = _markdown(["page", "database", "empty: p50 / p95", "grown: p50 / p95", "target (grown)",
                       "within target"], rows)
    return table, missed


HOW_MEASURED = """\
The databases are `bench/scale.py`'s (see "Scale"), built by its build
child: **empty** holds the {definitions} definitions and {schedules}
schedules and no run; **grown** the same plus the runs (60 days, 90 / 8 / 2 %
completed / failed / cancelled, each with the result and stages of a real
health-check run) and {backlog} queued runs per PostgreSQL database. A child
process signs in as a superuser and GETs each page in-process with Django's
test client (the whole view: session, permission check, queries, templates,
the policy headers; no network, no static files), {tries} times (fewer once
{budget:g} s have gone) after one left out; p50 / p95 of the wall clock of
each call, then in brackets the same of the measuring process's CPU time
(its own work, without the waits for a CPU a busy machine adds to the wall
clock, and without the PostgreSQL server's), and the SQL statements of one
more call: how many, and their time as Django logs it (in milliseconds). The list rows are
what the open list page polls every 2 s (its `hx-get` with the version of
the rows it shows: unchanged, 204); the older page is the first page's
"Older runs" link (a keyset cursor); the search is by the full trace id of
a run from the middle of the history (none on the empty database). The run
pages are of the newest completed and the newest failed run, checked to
show their timeline (three nodes, each that ended with its display lines);
the live part is `/runs/<id>/live/` without a version (200, the whole part).
On the empty database the run pages are of one completed run inserted for
the purpose and deleted afterwards (the list was measured before). The
definition suggestions are what the run list's definition box fetches as one
types (the first 20 names holding the text). The definitions and schedules
lists are their first page (100 by name); the definition page is of the
busiest definition (its nodes, its dry run, its newest runs).
"""


def report(results: dict, args, facts: dict, elapsed: float, reused: list[str]) -> tuple[str, str, list[str]]:
    table, missed = build_table(results)
    sizes = "; ".join(f"{label}: {r['runs']} runs, {r['stages']} stages" for label, r in results.items())
    title = f" --title '{args.title}'" if args.title != TITLE else ""
    command = (f".venv/bin/python bench/console.py --databases {','.join(args.databases)} --runs-postgresql "
               f"{args.runs_postgresql} --runs-sqlite {args.runs_sqlite} --backlog {args.backlog} --tries {args.tries}"
               f" --budget {args.budget:g} --limit {args.limit:g}{title} [--reuse]")
    verdict = ("Targets missed at the grown size: " + "; ".join(missed) + ".") if missed else "All targets met."
    how = HOW_MEASURED.format(definitions=f"{scale.SCHEDULES + len(scale.extra_definitions()):,}",
                              schedules=f"{scale.SCHEDULES:,}", backlog=f"{args.backlog:,}", tries=args.tries,
                              budget=args.budget)
    built = f"reused from an earlier build: {', '.join(reused)}" if reused else "every database built in this run"
    section = (f"## {args.title}\n\nMeasured on {facts['date']} by `bench/console.py` (took {elapsed:.0f} s; {built}); "
               f"re-run:\n\n    {command}\n\n"
               f"Load average before / after: {facts['load_before']} / {facts['load_after']}. "
               f"Databases as measured: {sizes}.\n\n{table}\n\n{verdict}\n\n{how}")
    return table, section, missed


def parent_main(args) -> int:
    from bench.run import machine_facts

    started = time.monotonic()
    facts = machine_facts([])
    envs = scale.environments(args, sqlite_dir=SQLITE_DIR)
    results: dict = {}
    reused: list[str] = []
    try:
        for env in envs:
            if scale.prepare(env, args):
                reused.append(env["label"])
        for env in envs:
            log(f"{env['label']}: measuring")
            results[env["label"]] = measure(env, args)
    finally:
        scale.tidy_up(envs, args)
    elapsed = time.monotonic() - started
    facts["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    scale.publish(report(results, args, facts, elapsed, reused), args, facts, results, title=args.title,
                  elapsed=elapsed)
    return 0


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)  # run the finally blocks: flush Redis, stop the child


def main() -> int:
    parser = argparse.ArgumentParser(description="The console's pages, timed on an empty and a grown database.")
    parser.add_argument("--child", choices=["measure"], help=argparse.SUPPRESS)
    parser.add_argument("--label", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--grown", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--databases", default="postgresql,sqlite", help="comma-separated: postgresql, sqlite")
    parser.add_argument("--runs-postgresql", type=int, default=100_000, help="finished runs (default 100000)")
    parser.add_argument("--runs-sqlite", type=int, default=100_000, help="finished runs (default 100000)")
    parser.add_argument("--backlog", type=int, default=scale.SQLITE_BACKLOG,
                        help=f"queued runs on PostgreSQL (default {scale.SQLITE_BACKLOG}; SQLite: always "
                             f"{scale.SQLITE_BACKLOG})")
    parser.add_argument("--tries", type=int, default=30, help="tries per page (default 30)")
    parser.add_argument("--budget", type=float, default=30.0,
                        help="seconds of tries per page before stopping early, at least 3 tries (default 30)")
    parser.add_argument("--limit", type=float, default=60.0, help="seconds one call may take (default 60)")
    parser.add_argument("--reuse", action="store_true", help="keep a grown database built earlier with the same sizes")
    parser.add_argument("--drop", action="store_true", help="drop the databases at the end")
    parser.add_argument("--pg-prefix", default="bench_console",
                        help="PostgreSQL databases <prefix>_empty and <prefix>_grown (default bench_console)")
    parser.add_argument("--redis-dbs", default="12,13", help="two spare Redis databases, flushed (default 12,13)")
    parser.add_argument("--title", default=TITLE,
                        help=f"the section of docs/benchmarks.md to rewrite (default {TITLE})")
    parser.add_argument("--no-doc", action="store_true", help="print only; do not rewrite docs/benchmarks.md")
    parser.add_argument("--json", help="also write every sample to this file")
    args = parser.parse_args()
    if args.child:
        return measure_main(args)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    if not args.databases or any(d not in ("postgresql", "sqlite") for d in args.databases):
        parser.error("--databases takes a comma-separated list of: postgresql, sqlite")
    try:
        args.redis_dbs = [int(x) for x in args.redis_dbs.split(",")]
    except ValueError:
        args.redis_dbs = []
    if len(args.redis_dbs) != 2 or any(not 0 <= x <= 15 for x in args.redis_dbs):
        parser.error("--redis-dbs takes two Redis database numbers, like 12,13")
    if args.runs_postgresql < 1 or args.runs_sqlite < 1 or args.backlog < 0 or args.tries < 3:
        parser.error("--runs-* must be >= 1, --backlog >= 0 and --tries >= 3")
    if args.budget <= 0 or args.limit <= 0:
        parser.error("--budget and --limit must be above 0")
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
