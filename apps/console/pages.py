"""What the console's pages show, read from the records: a run's node
timeline, its links to retries, the list of runs a search asks for, and the
pages of the lists by definition name.
Reads only; the templates escape every value."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from apps.orchestration.interrupt import INTERRUPTED_ERROR
from apps.orchestration.listings import format_duration
from apps.orchestration.models import PipelineRun, StageExecution
from apps.orchestration.rendering import node_display_lines
from apps.orchestration.runqueries import FilterError, RunFilters, pipeline_runs_page, run_filters_read
from apps.orchestration.selectors import RUN_LIST_FIELDS, pipeline_definition_names, trace_id_prefix
from apps.orchestration.validation import DEFINITION_NAME, node_path
from apps.secrets import scrub
from apps.text import printable

# Runs per page of the run list: a screen or two.
PAGE_SIZE = 50
# The text a search box takes: a run id or the start of a trace id.
SEARCH_MAX = 200
# Definitions or schedules per page of their lists: a production has thousands.
NAME_PAGE_SIZE = 100
# The definition names the run list's filter suggests as one types.
DEFINITION_CHOICES = 20
NAME_FILTER_PROBLEM = "a name filter is part of a definition name: letters, digits, '-' and '_' (at most 100)"


@dataclass
class NodeView:
    """One node of a run as the run page shows it."""

    node_id: str
    node_type: str
    status: str = "pending"  # succeeded, failed, interrupted, skipped, running, reused, pending, not reached
    attempt: int | None = None
    started_at: datetime | None = None
    duration: str = ""
    required: bool = True
    lines: str = ""  # the result display's lines of it, one per line
    output: str = ""  # the output as indented JSON, secrets scrubbed
    error: str = ""


def run_nodes(run: PipelineRun) -> list[NodeView]:
    """The nodes of ``run``'s snapshot along its path, each with what the run
    recorded of it: the ended ones from its result, the one being executed from
    its stage row (attempt, start), those a stop left out as ``not reached``
    and, while the run goes on, the rest as ``pending``. One query at most (its stage rows)."""
    result = run.result or {}
    node_results = result.get("node_results") or {}
    started = _stage_starts(run)
    views = []
    for node in node_path((run.config_snapshot or {}).get("nodes") or []):
        node_id, node_type = str(node.get("id")), str(node.get("type"))
        entry = node_results.get(node_id)
        view = NodeView(node_id=node_id, node_type=node_type, required=node.get("required", True) is not False)
        attempt, start = started.get(node_id, (None, None))
        view.started_at = start
        if entry is not None:
            view.status = "reused" if entry.get("reused") else str(entry.get("status"))
            if entry.get("error") == INTERRUPTED_ERROR:
                view.status = "interrupted"  # stopped by a cancel (cancel_run --force), not by its own failure
            view.attempt = entry.get("attempts") or attempt
            view.duration = format_duration(entry.get("duration_ms")) if entry.get("duration_ms") is not None else ""
            view.lines = "\n".join(node_display_lines(entry))
            output = entry.get("output")
            view.output = json.dumps(scrub(output), indent=2, ensure_ascii=False, default=str) if output else ""
            view.error = str(entry.get("error") or "")
        elif run.status == PipelineRun.Status.RUNNING and node_id == run.current_node:
            view.status, view.attempt = "running", attempt
        else:
            view.status = "pending" if not run.is_terminal else "not reached"
        views.append(view)
    return views


def _stage_starts(run: PipelineRun) -> dict[str, tuple[int, datetime]]:
    """Each node's latest attempt and when it started, from its stage rows."""
    if run.status == PipelineRun.Status.QUEUED:
        return {}
    starts: dict[str, tuple[int, datetime]] = {}
    rows = StageExecution.objects.filter(run_id=run.pk).values_list("node_id", "attempt", "started_at")
    for node_id, attempt, started_at in rows:
        if node_id not in starts or attempt > starts[node_id][0]:
            starts[node_id] = (attempt, started_at)
    return starts


def run_retries(run: PipelineRun) -> list[int]:
    """The ids of the runs retrying ``run``, newest first (a few at most)."""
    # By id alone, which the retry_of index holds: ordered by created_at, SQLite walks the created_at
    # index through every run instead (to it, nearly all NULL, retry_of looks as if it chose nothing).
    retries = PipelineRun.objects.filter(retry_of_id=run.pk).order_by("-pk")
    return list(retries.values_list("pk", flat=True)[:5])


def run_failed_at_node(run: PipelineRun) -> bool:
    """Whether ``run`` failed at one of its nodes (a retry can start there)."""
    node_results = (run.result or {}).get("node_results") or {}
    return run.status == PipelineRun.Status.FAILED and any(
        entry.get("status") == StageExecution.Status.FAILED for entry in node_results.values()
    )


@dataclass
class RunSearch:
    """A run list as asked for in the page's query string."""

    filters: RunFilters
    query: str = ""
    cursor: str | None = None
    problem: str | None = None  # what was wrong with the query; the list is then empty


def run_search_read(params) -> RunSearch:
    """The run list's filters, search text and page cursor from a query string
    (``params``: a QueryDict); a problem is kept to be shown, never raised."""
    keys = ("definition", "status", "trigger", "since", "host")
    values = {key: (params.get(key) or "").strip() or None for key in keys}
    query = (params.get("q") or "").strip()[:SEARCH_MAX]
    if printable(query) != query:  # control characters (NUL among them) are in no run id or trace id
        return RunSearch(RunFilters(), "", problem="search must be a run id or a trace id (printable text)")
    try:
        filters = run_filters_read(**values)
    except FilterError as exc:
        return RunSearch(RunFilters(), query, problem=str(exc).replace("--", "", 1))
    return RunSearch(filters, query, params.get("cursor") or None)


def run_search_page(search: RunSearch) -> tuple[list[dict], str | None]:
    """One page of the runs ``search`` asks for, newest first, and the next
    page's cursor: by the filters along their index (keyset paging, no count),
    or, with search text, the runs whose trace id starts with it (a run id
    finds that run). Raises FilterError for a cursor the list did not make."""
    if search.problem:
        return [], None
    if not search.query:
        return pipeline_runs_page(filters=search.filters, limit=PAGE_SIZE, cursor=search.cursor)
    runs = PipelineRun.objects.filter(trace_id_prefix(search.query))
    if search.query.isdigit() and len(search.query) < 19:
        runs = PipelineRun.objects.filter(pk=int(search.query)) | runs
    rows = list(runs.order_by("-created_at", "-pk").values(*RUN_LIST_FIELDS)[:PAGE_SIZE])
    return rows, None


@dataclass
class NamePage:
    """A page of a list by definition name (definitions, schedules), as the query string asks:
    the names holding ``query`` (any case), those after ``after``."""

    query: str = ""
    after: str | None = None
    problem: str | None = None  # what was wrong with the query; the list is then empty

    def links(self, names: list[str], more: bool) -> tuple[str | None, str | None]:
        """The query strings of the next page (after the last of ``names``, when ``more``)
        and of the first one (when this is not it)."""
        keep = {"q": self.query} if self.query else {}
        following = f"?{urlencode({**keep, 'after': names[-1]})}" if more and names else None
        first = f"?{urlencode(keep)}" if self.after is not None else None
        return following, first


def name_page_read(params) -> NamePage:
    """The name filter and page cursor of a list by definition name from a query string
    (``params``: a QueryDict); a filter no name can hold is a problem to show, a cursor that
    is not a name starts the list from its first page."""
    query = (params.get("q") or "").strip()
    if query and not DEFINITION_NAME.fullmatch(query):
        return NamePage(problem=NAME_FILTER_PROBLEM)
    after = params.get("after")
    return NamePage(query, after if after and DEFINITION_NAME.fullmatch(after) else None)


def definition_choices(typed: str) -> list[str]:
    """The run list's definition filter suggestions for the text ``typed`` so far: the first
    DEFINITION_CHOICES definition names holding it (any case); none for a text no name can hold."""
    typed = typed.strip()
    if typed and not DEFINITION_NAME.fullmatch(typed):
        return []
    return pipeline_definition_names(contains=typed, limit=DEFINITION_CHOICES)


def pretty(value) -> str:
    """``value`` as indented JSON with secrets scrubbed (a payload, a snapshot)."""
    return json.dumps(scrub(value), indent=2, ensure_ascii=False, default=str)
