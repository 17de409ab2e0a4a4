"""The console's schedule page: every pipeline schedule with its next due time
and last run; pause, resume and run now for operators."""
from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from apps.console import pages
from apps.console.security import can_operate, console_page
from apps.orchestration.launchrequest import LaunchError
from apps.orchestration.schedule_actions import (
    pipeline_schedule_active_run,
    pipeline_schedule_pause,
    pipeline_schedule_run_now,
)
from apps.orchestration.selectors import pipeline_schedules_list


@console_page()
def schedules_list(request: HttpRequest) -> HttpResponse:
    """/schedules/: the schedules by definition name, a page at a time (``?q=``, ``?after=``
    as the definitions list), each paused or active, with its next due time and last run."""
    page = pages.name_page_read(request.GET)
    found = [] if page.problem else pipeline_schedules_list(
        after=page.after, contains=page.query, limit=pages.NAME_PAGE_SIZE + 1)
    listings = found[:pages.NAME_PAGE_SIZE]
    names = [item.definition for item in listings]
    rows = [{"item": item, "paused": item.paused or not item.enabled} for item in listings]
    following, first = page.links(names, more=len(found) > len(listings))
    return render(request, "console/schedules.html", {
        "section": "schedules", "schedules": rows, "can_operate": can_operate(request),
        "page": page, "next": following, "first": first,
    })


@console_page(operate=True)
@require_POST
def schedule_pause(request: HttpRequest, name: str) -> HttpResponse:
    return _paused(request, name, paused=True)


@console_page(operate=True)
@require_POST
def schedule_resume(request: HttpRequest, name: str) -> HttpResponse:
    return _paused(request, name, paused=False)


def _paused(request: HttpRequest, name: str, *, paused: bool) -> HttpResponse:
    word = "paused" if paused else "resumed"
    try:
        changed = pipeline_schedule_pause(name=name, paused=paused)
    except LaunchError as exc:
        messages.error(request, str(exc))
    else:
        done = f"Schedule of {name} {word}." if changed else f"Schedule of {name} was {word} already."
        messages.success(request, done)
    return redirect("console:schedules")


@console_page(operate=True)
@require_POST
def schedule_run(request: HttpRequest, name: str) -> HttpResponse:
    """Run the schedule of ``name`` once now, as its tick does (overlap rules apply)."""
    try:
        runs = pipeline_schedule_run_now(name=name)
    except LaunchError as exc:
        messages.error(request, str(exc))
        return redirect("console:schedules")
    if not runs:
        active = pipeline_schedule_active_run(name=name)
        waiting = f" (run {active.pk} is still {active.status})" if active else ""
        messages.info(request, f"Nothing launched: the schedule of {name} skips while its last run goes on{waiting}.")
        return redirect("console:schedules")
    messages.success(request, f"Run {runs[0].pk} launched from the schedule of {name}.")
    return redirect("console:run", run_id=runs[0].pk)
