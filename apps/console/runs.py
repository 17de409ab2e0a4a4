"""The console's run pages: the list, one run, and what an operator does to
a run (cancel, retry). Thin: read the request, call one selector or action,
render."""
from __future__ import annotations

import hashlib

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from apps.console import pages
from apps.console.security import can_operate, console_page
from apps.orchestration import rendering
from apps.orchestration.launchrequest import AlreadyRetried, LaunchError
from apps.orchestration.listings import format_duration
from apps.orchestration.models import PipelineRun
from apps.orchestration.run_actions import pipeline_run_cancel, pipeline_run_retry
from apps.orchestration.runqueries import FilterError
from apps.orchestration.selectors import pipeline_run_get, run_log_lines_list


def _version(html: str) -> str:
    """A short fingerprint of a rendered part: the browser sends it back, and an unchanged part is not sent again."""
    return hashlib.sha256(html.encode()).hexdigest()[:16]


def _unchanged(request: HttpRequest, html: str) -> bool:
    return request.GET.get("v") == _version(html)


def _rows(search: pages.RunSearch) -> tuple[list[dict], str | None]:
    """The run list's rows (each with its duration as shown), and the cursor of the page after them."""
    try:
        rows, cursor = pages.run_search_page(search)
    except FilterError as exc:
        search.problem = str(exc)
        rows, cursor = [], None
    for row in rows:
        row["duration"] = format_duration(row["duration_ms"])
    return rows, cursor


def _rows_html(request: HttpRequest, rows: list[dict]) -> str:
    return render_to_string("console/run_rows.html", {"runs": rows}, request=request)


def _rows_version(rows: list[dict]) -> str:
    """The fingerprint of the rows a list shows, from their values rather than their HTML:
    a poll of unchanged rows, the list's most frequent request, renders nothing."""
    return _version(repr(rows))


def _rows_url(params: QueryDict) -> str:
    query = params.copy()
    query.pop("v", None)
    return f"{reverse('console:run_rows')}?{query.urlencode()}"


@console_page()
def runs_list(request: HttpRequest) -> HttpResponse:
    """/runs/: the newest runs first, filtered and searched from the query
    string; the first page refreshes itself while it is open."""
    search = pages.run_search_read(request.GET)
    rows, cursor = _rows(search)
    rows_html = _rows_html(request, rows)
    older = None
    if cursor:
        query = request.GET.copy()
        query["cursor"] = cursor
        older = f"?{query.urlencode()}"
    return render(request, "console/runs.html", {
        "section": "runs",
        "rows_html": rows_html,
        "version": _rows_version(rows),
        "live": search.cursor is None and not search.problem,
        "rows_url": _rows_url(request.GET),
        "older": older,
        "search": search,
        "problem": search.problem,
        "statuses": PipelineRun.Status.choices,
        "triggers": PipelineRun.Trigger.choices,
        "chosen": {key: request.GET.get(key, "") for key in ("status", "definition", "trigger", "since", "host", "q")},
    })


@console_page()
def run_definition_names(request: HttpRequest) -> HttpResponse:
    """The definition names the run list's filter suggests for what was typed in it
    (``?definition=``): a datalist's options, fetched as one types."""
    return render(request, "console/definition_choices.html", {
        "names": pages.definition_choices(request.GET.get("definition", "")),
    })


@console_page()
def run_rows(request: HttpRequest) -> HttpResponse:
    """The run list's rows alone (its live refresh): 204 when they did not change."""
    search = pages.run_search_read(request.GET)
    rows, _ = _rows(search)
    version = _rows_version(rows)
    if request.GET.get("v") == version:
        return HttpResponse(status=204)
    return render(request, "console/run_rows_live.html", {
        "rows_html": _rows_html(request, rows), "version": version, "live": True, "rows_url": _rows_url(request.GET),
    })


def _run_or_404(run_id: int) -> PipelineRun:
    run = pipeline_run_get(run_id=run_id)
    if run is None:
        raise Http404(f"Pipeline run not found: {run_id}")
    return run


def _live_part(request: HttpRequest, run: PipelineRun) -> str:
    """The changing part of a run's page (outcome, actions, nodes, logs) as HTML."""
    return render_to_string("console/run_live.html", {
        "run": run,
        "duration": format_duration(run.duration_ms),
        "nodes": pages.run_nodes(run),
        "retries": pages.run_retries(run),
        "can_operate": can_operate(request),
        "can_retry_failed": pages.run_failed_at_node(run),
    }, request=request)


@console_page()
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    """/runs/<id>/: the outcome, the node timeline and the logs, refreshed
    while the run goes on; the payload and definition snapshot at the end."""
    run = _run_or_404(run_id)
    live = _live_part(request, run)
    lines = run_log_lines_list(run_id=run.pk)
    return render(request, "console/run.html", {
        "section": "runs",
        "run": run, "live_html": live, "version": _version(live),
        "lines": lines, "after": lines[-1].seq if lines else 0, "poll": not run.is_terminal,
        "payload": pages.pretty(run.payload), "snapshot": pages.pretty(run.config_snapshot),
    })


@console_page()
def run_live(request: HttpRequest, run_id: int) -> HttpResponse:
    """The run page's changing part alone: 204 when it did not change."""
    run = _run_or_404(run_id)
    live = _live_part(request, run)
    if _unchanged(request, live):
        return HttpResponse(status=204)
    return render(request, "console/run_live_wrap.html", {"run": run, "live_html": live, "version": _version(live)})


@console_page()
def run_logs(request: HttpRequest, run_id: int) -> HttpResponse:
    """The run page's log lines after ``after`` (a seq), to append below those
    it shows, with the poll for the next ones while the run goes on: 204 when
    there is nothing new yet; once the run has ended, its last lines and no poll."""
    run = _run_or_404(run_id)  # read before the lines: a run seen ended has all its lines stored
    after = request.GET.get("after", "0")
    lines = run_log_lines_list(run_id=run.pk, after_seq=int(after) if after.isdigit() and len(after) < 10 else 0)
    if not lines and not run.is_terminal:
        return HttpResponse(status=204)
    return render(request, "console/log_lines.html", {
        "run": run, "lines": lines, "after": lines[-1].seq if lines else after, "poll": not run.is_terminal,
    })


@console_page(operate=True)
@require_http_methods(["GET", "POST"])
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    """/runs/<id>/cancel/: the confirmation (GET), then the cancel (POST),
    with "stop the running node" when its box is ticked."""
    run = _run_or_404(run_id)
    if request.method == "GET":
        return render(request, "console/confirm.html", {
            "section": "runs", "run": run, "action": "cancel", "title": f"Cancel run {run.pk}?",
        })
    try:
        run = pipeline_run_cancel(run_id=run.pk, stop_node=request.POST.get("stop_node") == "on")
    except LaunchError as exc:
        messages.error(request, str(exc))
        return redirect("console:run", run_id=run_id)
    messages.success(request, rendering.render_cancelled(run))
    return redirect("console:run", run_id=run.pk)


@console_page(operate=True)
@require_http_methods(["GET", "POST"])
def run_retry(request: HttpRequest, run_id: int) -> HttpResponse:
    """/runs/<id>/retry/: the confirmation (GET), then the retry (POST), from
    the failed node with ``from_failed``; a run retried already needs the
    "retry again" box. Leads to the new run's page."""
    run = _run_or_404(run_id)
    from_failed = (request.POST if request.method == "POST" else request.GET).get("from_failed") == "1"
    retries = pages.run_retries(run)
    if request.method == "GET":
        return render(request, "console/confirm.html", {
            "section": "runs", "run": run, "action": "retry", "from_failed": from_failed, "retries": retries,
            "title": f"Retry run {run.pk}{' from its failed node' if from_failed else ''}?",
        })
    try:
        new = pipeline_run_retry(run_id=run.pk, from_failed=from_failed, force=request.POST.get("force") == "on")
    except AlreadyRetried as exc:
        messages.error(request, f"{exc}: tick “retry it again” to retry it all the same.")
        return redirect(f"{reverse('console:run_retry', args=[run.pk])}{'?from_failed=1' if from_failed else ''}")
    except LaunchError as exc:
        messages.error(request, str(exc))
        return redirect("console:run", run_id=run.pk)
    messages.success(request, f"Run {new.pk} launched, retrying run {run.pk}.")
    return redirect("console:run", run_id=new.pk)
