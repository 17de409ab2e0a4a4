"""/api/v1/runs: launch runs, show one (optionally waiting for its end), list
them page by page, cancel and retry one. Scopes runs:read and runs:write.

Each view reads its input, calls the service the commands call
(inputs/launch for run_pipeline, runqueries for list_runs, waiting for
show_run --wait, run_actions for cancel_run and retry_run), and answers
with the JSON those commands print. Refusals keep the commands' messages.
"""
from __future__ import annotations

import math
from typing import Any

from django.http import HttpRequest
from ninja import Body, Router, Schema, Status
from pydantic import ConfigDict

from apps.api.auth import ApiKeyAuth
from apps.api.errors import ApiError
from apps.api.schemas import AUTH_ERRORS, BODY_ERRORS, NOT_FOUND, ErrorOut
from apps.orchestration import listings, rendering, waiting
from apps.orchestration.inputs import config_resolve, definition_resolve
from apps.orchestration.launch import pipeline_runs_launch_to
from apps.orchestration.launchrequest import AlreadyRetried, LaunchError, LaunchRequest, Refusal, RunExists
from apps.orchestration.models import PipelineRun
from apps.orchestration.run_actions import pipeline_run_cancel, pipeline_run_retry
from apps.orchestration.runqueries import FilterError, limit_read, pipeline_runs_page, run_filters_read
from apps.orchestration.selectors import pipeline_run_get

router = Router(tags=["runs"])
READ, WRITE = ApiKeyAuth("runs:read"), ApiKeyAuth("runs:write")

# ?wait holds a request (and a web thread) this long at most.
WAIT_MAX_SECONDS = 60
# A page of the run listing: this many runs unless ?limit says otherwise, and never more than the most.
LIST_DEFAULT, LIST_MAX = 50, 500
# How each refusal of a launch or a run action is answered.
REFUSAL_STATUS = {
    Refusal.BAD_INPUT: 400,
    Refusal.NOT_FOUND: 404,
    Refusal.STATE: 409,
    Refusal.CONFLICT: 409,
    Refusal.NO_TARGET: 409,
    Refusal.UNAVAILABLE: 503,
}
REFUSALS: dict[int, type[Schema]] = {404: ErrorOut, 409: ErrorOut, 503: ErrorOut}


class RunCreateIn(Schema):
    """A launch: a stored definition by name, or a definition given whole."""

    # A misspelt field is refused rather than ignored; no value is converted to another type.
    model_config = ConfigDict(extra="forbid", strict=True)

    definition: str | None = None
    config: dict[str, Any] | None = None
    payload: dict[str, Any] | None = None
    source: str = "auto"
    environment: str = "development"
    trace_id: str | None = None
    host: str | None = None
    idempotency_key: str | None = None


class RetryIn(Schema):
    # Strict: "yes" or 1 is not taken for true.
    model_config = ConfigDict(extra="forbid", strict=True)

    from_failed: bool = False
    force: bool = False


class CancelIn(Schema):
    # Strict: "yes" or 1 is not taken for true.
    model_config = ConfigDict(extra="forbid", strict=True)

    stop_node: bool = False


class RunQueuedOut(Schema):
    """A run just launched (what ``run_pipeline --json`` prints for it)."""

    run_id: int
    trace_id: str
    status: str
    target_host: str | None
    group_id: str | None


class RunLaunchedOut(RunQueuedOut):
    """The first run a launch made, and all of them: one per host when it fans out."""

    run_ids: list[int]
    runs: list[RunQueuedOut]
    note: str | None


class RunOut(Schema):
    """A run's record, as ``run_pipeline --json`` and ``show_run --json`` print it."""

    run_id: int
    trace_id: str
    definition: str | None
    config: str | None
    origin: str
    trigger: str
    retry_of: int | None
    idempotency_key: str | None
    target_host: str | None
    group_id: str | None
    source: str
    environment: str
    status: str
    current_node: str | None
    duration_ms: float | None
    error: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    executed_nodes: list[str]
    skipped_nodes: list[str]
    node_results: dict[str, Any]
    exit_code: int


class RunCancelOut(RunOut):
    """The run after the cancel, and what ``cancel_run`` says of it."""

    message: str


class RunListedOut(Schema):
    """A listed run, as ``list_runs --json`` prints it."""

    run_id: int
    trace_id: str
    definition: str | None
    config: str | None
    origin: str
    origin_kind: str
    target_host: str | None
    group_id: str | None
    trigger: str
    retry_of: int | None
    idempotency_key: str | None
    status: str
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    duration_ms: float | None
    error: str | None


class RunListOut(Schema):
    runs: list[RunListedOut]
    next_cursor: str | None


def _refused(exc: LaunchError) -> ApiError:
    """The answer to a refused launch or run action: its first line, and each problem."""
    return ApiError(REFUSAL_STATUS[exc.refusal], str(exc).split("\n", 1)[0].rstrip(":"), exc.messages)


def _launched(runs: list[PipelineRun], note: str | None) -> dict:
    queued = [rendering.queued_as_dict(run) for run in runs]
    return {**queued[0], "run_ids": [item["run_id"] for item in queued], "runs": queued, "note": note}


def _run_or_404(run_id: int) -> PipelineRun:
    run = pipeline_run_get(run_id=run_id)
    if run is None:
        raise ApiError(404, f"Pipeline run not found: {run_id}")
    return run


@router.post(
    "",
    auth=WRITE,
    response={201: RunLaunchedOut, 200: RunOut, **AUTH_ERRORS, **BODY_ERRORS, **REFUSALS},
    summary="Launch a run",
)
def runs_create(request: HttpRequest, body: RunCreateIn) -> Status:
    """Launch a run of a stored definition (``definition``) or of a definition given whole
    (``config``), as ``run_pipeline`` does: validated first, stored as queued, sent to the
    workers. ``host`` is a host name, ``auto`` (the host the payload's alert names) or ``all``
    (one run per host a live worker serves; also a definition's ``hosts``): then 201 lists
    every run in ``runs``/``run_ids``, the top-level fields being the first run's.
    An ``idempotency_key`` a run of the same definition has already: 200 with that run's
    record, nothing launched; one a run of another definition (or another config) has: 409.
    400 with each validation message in ``errors``; 409 when no live worker serves a host
    (``all``); 503 when the broker cannot take the run. Scope: runs:write."""
    try:
        if body.definition is not None and body.config is not None:
            raise LaunchError("Cannot specify both definition and config")
        if body.definition is None and body.config is None:
            raise LaunchError("Give the run's definition: definition (a stored definition's name) or config")
        resolved = (
            definition_resolve(name=body.definition) if body.definition is not None
            else config_resolve(config=body.config)
        )
        launch = LaunchRequest(
            resolved=resolved,
            payload=body.payload if body.payload is not None else {},
            source=body.source,
            environment=body.environment,
            trace_id=body.trace_id,
            trigger=PipelineRun.Trigger.API,
            idempotency_key=body.idempotency_key,
        )
        runs, targets = pipeline_runs_launch_to(request=launch, host=body.host)
    except RunExists as exc:
        return Status(200, rendering.run_json(exc.run))
    except LaunchError as exc:
        raise _refused(exc) from None
    return Status(201, _launched(runs, targets.note))


@router.get("", auth=READ, response={200: RunListOut, **AUTH_ERRORS}, summary="List runs")
def runs_list(
    request: HttpRequest,
    definition: str | None = None,
    status: str | None = None,
    trigger: str | None = None,
    since: str | None = None,
    host: str | None = None,
    limit: int = LIST_DEFAULT,
    cursor: str | None = None,
) -> dict:
    """Runs newest first, with the fields of ``list_runs --json``, at most ``limit`` (default
    50, at most 500) a page: filtered by definition name, status, trigger, ``since`` (30s,
    15m, 2h, 7d back from now) and target host. ``next_cursor``, passed back as ``cursor``
    with the same filters, gives the next page (null after the last); runs launched in the
    meantime do not shift the pages. Scope: runs:read."""
    try:
        filters = run_filters_read(definition=definition, status=status, trigger=trigger, since=since, host=host)
        rows, next_cursor = pipeline_runs_page(
            filters=filters, limit=limit_read(limit, most=LIST_MAX), cursor=cursor
        )
    except FilterError as exc:
        raise ApiError(400, str(exc), [str(exc)]) from None
    return {"runs": [listings.run_listing_dict(row) for row in rows], "next_cursor": next_cursor}


@router.get("/{int:run_id}", auth=READ, response={200: RunOut, **AUTH_ERRORS, **NOT_FOUND}, summary="Show a run")
def run_get(request: HttpRequest, run_id: int, wait: float | None = None) -> dict:
    """The run's record, as ``run_pipeline --json`` prints it. With ``wait`` (seconds, above 0
    and at most 60) the answer comes when the run has ended or when ``wait`` has passed,
    whichever is first (woken as ``--wait`` is, no polling), with the run as it is then:
    ``status`` says which. Scope: runs:read."""
    if wait is not None and not (math.isfinite(wait) and 0 < wait <= WAIT_MAX_SECONDS):
        message = f"wait must be a number of seconds greater than 0 and up to {WAIT_MAX_SECONDS}"
        raise ApiError(400, message, [message])
    run = _run_or_404(run_id)
    if wait is not None and not run.is_terminal:
        try:
            # No worker look-up on the way (the pickup deadline lies past the wait): only the run's end or the time.
            run = waiting.pipeline_run_wait(run_id=run.pk, timeout=wait, pickup_timeout=wait + 1).run
        except PipelineRun.DoesNotExist:
            raise ApiError(404, f"Pipeline run not found: {run_id}") from None
    return rendering.run_json(run)


@router.post(
    "/{int:run_id}/cancel",
    auth=WRITE,
    response={200: RunCancelOut, **AUTH_ERRORS, **BODY_ERRORS, **REFUSALS},
    summary="Cancel a run",
)
def run_cancel(request: HttpRequest, run_id: int, body: CancelIn = Body(None)) -> dict:  # noqa: B008
    """Cancel the run as ``cancel_run`` does: a queued run (or one whose worker is gone) is
    cancelled at once; a running one finishes its current node and starts no other
    (``status`` stays running until then), or with ``stop_node`` (``cancel_run --force``)
    has its current node interrupted, recorded as failed, and ends cancelled within about a
    second. The body may be left out. A run cancelled already: 200, ``message`` says so.
    404 for an unknown run, 409 for one that ended otherwise. Scope: runs:write."""
    body = body if body is not None else CancelIn()
    try:
        run = pipeline_run_cancel(run_id=run_id, stop_node=body.stop_node)
    except LaunchError as exc:
        raise _refused(exc) from None
    return rendering.run_json(run) | {"message": rendering.render_cancelled(run)}


@router.post(
    "/{int:run_id}/retry",
    auth=WRITE,
    response={201: RunLaunchedOut, **AUTH_ERRORS, **BODY_ERRORS, **REFUSALS},
    summary="Retry a run",
)
def run_retry(request: HttpRequest, run_id: int, body: RetryIn = Body(None)) -> Status:  # noqa: B008
    """Launch a new run (trigger ``retry``) of a finished run's snapshot and payload, as
    ``retry_run`` does; ``from_failed`` reuses the outputs of the nodes that succeeded before
    its first failed node and starts there. The body may be left out. 404 for an unknown
    run, 409 for one not finished (or, with ``from_failed``, one that failed at no node) and
    for one retried already unless ``force`` (the message names its newest retry), 503 when
    the broker cannot take it. Scope: runs:write."""
    body = body if body is not None else RetryIn()
    try:
        run = pipeline_run_retry(run_id=run_id, from_failed=body.from_failed, force=body.force)
    except AlreadyRetried as exc:
        message = f'{exc}: pass "force": true to retry it again'
        raise ApiError(REFUSAL_STATUS[exc.refusal], message, [message]) from None
    except LaunchError as exc:
        raise _refused(exc) from None
    return Status(201, _launched([run], None))
