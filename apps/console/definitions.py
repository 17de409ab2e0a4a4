"""The console's definition pages: the list, one definition with its nodes and
dry run, and "Run now" with a payload."""
from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from apps import jsondata
from apps.console import pages
from apps.console.security import can_operate, console_page
from apps.orchestration import rendering
from apps.orchestration.definition_listings import schedule_words, trigger_words
from apps.orchestration.inputs import definition_resolve, payload_check
from apps.orchestration.launch import pipeline_runs_launch_to
from apps.orchestration.launchrequest import LaunchError, LaunchRequest
from apps.orchestration.listings import format_duration
from apps.orchestration.models import PipelineRun
from apps.orchestration.selectors import pipeline_definitions_overview, pipeline_runs_list, pipeline_schedules_list

# The newest runs a definition's page lists.
DEFINITION_RUNS = 10


def _listed(row: dict) -> dict:
    """A definition row (selectors.pipeline_definitions_overview) with what its listing shows in words."""
    return {
        **row,
        "node_count": len(row["nodes"]) if isinstance(row["nodes"], list) else 0,
        "schedule_text": schedule_words(row["schedule"]),
        "trigger_list": trigger_words(row["triggers"]),
    }


@console_page()
def definitions_list(request: HttpRequest) -> HttpResponse:
    """/definitions/: the stored definitions by name, a page at a time (``?q=`` a part of
    the name, ``?after=`` the page's cursor), each with its schedule, triggers and last run."""
    page = pages.name_page_read(request.GET)
    found = [] if page.problem else pipeline_definitions_overview(
        after=page.after, contains=page.query, limit=pages.NAME_PAGE_SIZE + 1)
    rows = [_listed(row) for row in found[:pages.NAME_PAGE_SIZE]]
    following, first = page.links([row["name"] for row in rows], more=len(found) > len(rows))
    return render(request, "console/definitions.html", {
        "section": "definitions", "definitions": rows, "page": page, "next": following, "first": first,
    })


def _definition_page(request: HttpRequest, name: str, *, payload_text: str = "{}", status: int = 200) -> HttpResponse:
    rows = pipeline_definitions_overview(name=name)
    if not rows:
        raise Http404(f"Pipeline definition not found: {name}")
    row = _listed(rows[0])
    nodes = row["nodes"] if isinstance(row["nodes"], list) else []
    dry_run = None
    if row["is_active"]:
        try:
            resolved = definition_resolve(name=name)
            dry_run = rendering.render_dry_run(
                resolved=resolved, payload={}, source="console", environment="development"
            )
        except (LaunchError, KeyError, TypeError):
            dry_run = None  # a row that no longer validates: its nodes are still listed
    runs = pipeline_runs_list(definition=name, limit=DEFINITION_RUNS)
    for run in runs:
        run["duration"] = format_duration(run["duration_ms"])
    schedules = pipeline_schedules_list(definition=name) if row["schedule"] else []
    return render(request, "console/definition.html", {
        "section": "definitions",
        "definition": row,
        "node_lines": "\n".join(rendering.dry_run_node_lines(nodes)).rstrip() if nodes else "",
        "dry_run": dry_run,
        "runs": runs,
        "schedule": schedules[0] if schedules else None,
        "can_operate": can_operate(request),
        "payload_text": payload_text,
    }, status=status)


@console_page()
def definition_detail(request: HttpRequest, name: str) -> HttpResponse:
    """/definitions/<name>/: its nodes, dry run, schedule and newest runs; "Run now" for operators."""
    return _definition_page(request, name)


@console_page(operate=True)
@require_POST
def definition_run(request: HttpRequest, name: str) -> HttpResponse:
    """Launch the definition ``name`` with the payload typed in (a JSON object),
    trigger ``console``, through the launcher; leads to the new run's page (the
    first one when the definition runs on several hosts). A payload or
    definition the launcher refuses is shown on the definition's page, nothing launched."""
    payload_text = request.POST.get("payload", "").strip() or "{}"
    try:
        try:
            payload = jsondata.loads(payload_text)
        except jsondata.JsonInputError as exc:
            raise LaunchError(f"Invalid JSON in payload: {exc}") from None
        launch = LaunchRequest(
            resolved=definition_resolve(name=name), payload=payload_check(payload),
            source="console", trigger=PipelineRun.Trigger.CONSOLE,
        )
        runs, targets = pipeline_runs_launch_to(request=launch, host=None)
    except LaunchError as exc:
        for message in exc.messages:
            messages.error(request, message)
        return _definition_page(request, name, payload_text=payload_text, status=400)
    if targets.note:
        messages.info(request, targets.note)
    if len(runs) > 1:
        launched = ", ".join(str(run.pk) for run in runs)
        messages.success(request, f"{len(runs)} runs launched, one per host: runs {launched}.")
    else:
        messages.success(request, f"Run {runs[0].pk} launched.")
    return redirect("console:run", run_id=runs[0].pk)
