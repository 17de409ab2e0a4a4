"""A run listing asked for as text (``list_runs``'s options, the API's query
values): its filters read and checked, and its pages, newest first, chained
by an opaque cursor (keyset paging: a page starts below the last run of the
one before it, so runs launched meanwhile neither shift nor repeat a page)."""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.utils import timezone

from apps.hostnames import HOST_NAME_RULE, host_name
from apps.orchestration.models import PipelineRun
from apps.orchestration.selectors import RUN_ID_MAX, pipeline_runs_list
from apps.orchestration.validation import DEFINITION_NAME
from apps.text import printable

# Longer than any wait or grace anyone means (about 31 years), and within what timers and dates can hold.
MAX_SECONDS = 1_000_000_000

DURATION = re.compile(r"([0-9]{1,12})([smhd])")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# A cursor is short: a timestamp and an id, base64-encoded. Longer text is refused unread.
CURSOR_MAX = 100


class FilterError(ValueError):
    """A listing's filter, limit or cursor that cannot be used; the message
    names the option as ``list_runs`` does."""


def duration_parse(value: str, flag: str) -> timedelta:
    """``value`` of the option ``flag`` (``30s``, ``15m``, ``2h``, ``7d``) as a
    timedelta above 0 and at most MAX_SECONDS; FilterError otherwise."""
    match = DURATION.fullmatch(value)
    seconds = int(match[1]) * DURATION_UNITS[match[2]] if match else 0
    if not 0 < seconds <= MAX_SECONDS:
        raise FilterError(
            f"{flag} must be a duration above 0 such as 30s, 15m, 2h or 7d (at most {MAX_SECONDS}s), "
            f"not {printable(value[:40])}{'…' if len(value) > 40 else ''}"
        )
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class RunFilters:
    """What a run listing keeps; None keeps every run."""

    definition: str | None = None
    status: str | None = None
    trigger: str | None = None
    since: datetime | None = None
    host: str | None = None


def _choice(value: str | None, flag: str, choices: list[str]) -> str | None:
    if value is None or value in choices:
        return value
    raise FilterError(f"{flag} must be one of: {', '.join(choices)}")


def run_filters_read(
    *,
    definition: str | None = None,
    status: str | None = None,
    trigger: str | None = None,
    since: str | None = None,
    host: str | None = None,
) -> RunFilters:
    """The filters of a run listing from the text of its options: a
    definition name, a run status, a trigger, a duration back from now
    (``since``: 30s, 15m, 2h, 7d) and a host name. Raises FilterError, with
    the message of the option at fault, for a value none of these can be."""
    # A name no definition can have is not looked up (some databases refuse such text).
    if definition is not None and not DEFINITION_NAME.fullmatch(definition):
        raise FilterError("--definition must be a definition name: letters, digits, '-' and '_', at most 100")
    if host is not None and host_name(host) is None:
        raise FilterError(f"--host must be a host name ({HOST_NAME_RULE})")
    return RunFilters(
        definition=definition,
        status=_choice(status, "--status", PipelineRun.Status.values),
        trigger=_choice(trigger, "--trigger", PipelineRun.Trigger.values),
        since=timezone.now() - duration_parse(since, "--since") if since is not None else None,
        host=host_name(host) if host is not None else None,
    )


def limit_read(value: int, *, most: int, flag: str = "--limit") -> int:
    """``value`` when it is from 1 to ``most``; FilterError otherwise."""
    if not 1 <= value <= most:
        raise FilterError(f"{flag} must be from 1 to {most}")
    return value


def cursor_encode(row: dict) -> str:
    """The cursor of the page after the listed run ``row`` (its created_at and id)."""
    text = f"{row['created_at'].isoformat()}|{row['id']}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def cursor_decode(cursor: str) -> tuple[datetime, int]:
    """The (created_at, id) a cursor from cursor_encode stands for; FilterError
    for any text cursor_encode did not make."""
    problem = FilterError("cursor is not one this listing gave (use next_cursor as it was returned)")
    if not 0 < len(cursor) <= CURSOR_MAX or not cursor.isascii():
        raise problem
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        stamp, run_id = text.split("|")
        created_at = datetime.fromisoformat(stamp)
        number = int(run_id)
        if created_at.tzinfo is None or not run_id.isdigit() or not 0 < number <= RUN_ID_MAX:
            raise problem
        # In UTC, as stored; an offset that moves the time out of the calendar is refused here.
        return created_at.astimezone(UTC), number
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        raise problem from None


def pipeline_runs_page(*, filters: RunFilters, limit: int, cursor: str | None = None) -> tuple[list[dict], str | None]:
    """One page of the runs ``filters`` keeps, newest first: at most ``limit``
    listed runs (selectors.pipeline_runs_list's dicts) below ``cursor`` (from
    the page before; None: the newest), and the cursor of the next page, None
    when this page holds the last of them. Reads ``limit`` + 1 rows along an
    index, never counts. Raises FilterError for a cursor it did not make."""
    before = cursor_decode(cursor) if cursor is not None else None
    rows = pipeline_runs_list(
        definition=filters.definition, status=filters.status, trigger=filters.trigger,
        since=filters.since, host=filters.host, before=before, limit=limit + 1,
    )
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], cursor_encode(rows[limit - 1])
