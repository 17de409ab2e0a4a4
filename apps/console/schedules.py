"""The console's schedule page: every pipeline schedule with its next due time
and last run; pause, resume and run now for operators."""
from __future__ import annotations

from urllib.parse import quote

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
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
    links = _RowLinks()
    rows = [{"item": item, "paused": item.paused or not item.enabled, **links.of(item)} for item in listings]
    following, first = page.links(names, more=len(found) > len(listings))
    return render(request, "console/schedules.html", {
        "section": "schedules", "schedules": rows, "can_operate": can_operate(request),
        "page": page, "next": following, "first": first,
    })


class _RowLinks:
    """The links of a schedules page's rows. Each URL is reversed once per page, with a mark
    where the name goes: reversing four URLs for each of a hundred rows was a third of the page."""

    MARK = "0mark0"  # a definition name, so every pattern takes it; it is in none of their fixed parts

    def __init__(self) -> None:
        self.patterns = {
            key: reverse(f"console:{view}", args=[self.MARK])
            for key, view in (("definition_url", "definition"), ("pause_url", "schedule_pause"),
                              ("resume_url", "schedule_resume"), ("run_url", "schedule_run"))
        }
        self.run_pattern = reverse("console:run", args=[0])

    def of(self, item) -> dict:
        name = quote(item.definition, safe="")
        links = {key: pattern.replace(self.MARK, name) for key, pattern in self.patterns.items()}
        last = item.last_run
        links["last_run_url"] = self.run_pattern.replace("/0/", f"/{int(last['run_id'])}/") if last else ""
        return links


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
