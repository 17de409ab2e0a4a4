"""Monitoring state: what runs found per (definition, host), and which notices
notify nodes with ``notify_on`` send about it.

Two small tables (apps/orchestration/models.py):

- MonitorState, the board: the severity the last run of a definition found on
  a host, since when, and its last run and notice. Written with the run's
  end, inside its fenced end write (state_end_record).
- MonitorNotice, per notify node: the severity its receivers last heard of.
  A node with ``notify_on`` other than "always" decides from it whether to
  speak (notice_decide, pure) and claims the notice with one conditional
  update before sending (notice_claim), so two runs deciding at once decide
  once; a send that fails gives the claim back (notice_release).

A run's severity is its latest analysis' severity, else the worst of its
checks; a run that found neither has none and leaves the state alone.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import Case, F, Value, When

from apps.orchestration.models import MonitorNotice, MonitorState, Severity
from apps.orchestration.nodes.base import NodeContext
from apps.orchestration.nodes.common import all_checks, latest_analysis, latest_incident, measured_host

RANK = {Severity.OK: 0, Severity.INFO: 1, Severity.WARNING: 2, Severity.CRITICAL: 3}
PROBLEMS = frozenset({Severity.WARNING.value, Severity.CRITICAL.value})
ALWAYS, PROBLEM, CHANGE = "always", "problem", "change"
NOTIFY_ON = (ALWAYS, PROBLEM, CHANGE)
# renotify_after: from a minute to 30 days.
RENOTIFY_MIN, RENOTIFY_MAX = 60, 30 * 86400
# Claims tried before giving up when other runs keep changing the row (each loser re-reads and decides again).
_CLAIM_TRIES = 5
_HOST_MAX = MonitorState._meta.get_field("host").max_length or 100


def run_severity(results: dict) -> str | None:
    """What the run found so far (``results``: node id -> {type, output}):
    the latest analysis' severity, else the worst check status; None when it
    found neither."""
    analysis = latest_analysis(results)
    if analysis and analysis.get("severity") in RANK:
        return str(analysis["severity"])
    statuses = [str(c["status"]) for c in all_checks(results) if c.get("status") in RANK]
    return max(statuses, key=lambda status: RANK[status]) if statuses else None  # type: ignore[index]


def monitor_key(ctx: NodeContext) -> tuple[str, str]:
    """The (definition, host) the state of ``ctx``'s run is kept under: the
    definition's name ('builtin', 'config:<file name>' for the others), and
    the host its checks measured, else its target host, else its first
    alert's host, else ""."""
    if ctx.origin_kind == "definition":
        definition = ctx.pipeline
    elif ctx.origin_kind == "config":
        definition = "config:" + ctx.pipeline.rsplit("/", 1)[-1]
    else:
        definition = "builtin"
    host = measured_host(ctx.results) or ctx.target_host
    if not host:
        alerts = (latest_incident(ctx.results) or {}).get("alerts") or []
        host = next((str(a["host"]) for a in alerts if isinstance(a, dict) and a.get("host")), "")
    return definition, host[:_HOST_MAX]


def state_variable(ctx: NodeContext) -> dict:
    """The ``state`` variable of a node's ``when``: the severity the runs
    before this one found on this host ("ok" when none has), since when
    (null), whether this run's severity so far differs from it, and that
    severity (``current``, null when none yet). One read of the state row."""
    definition, host = monitor_key(ctx)
    row = MonitorState.objects.filter(definition=definition, host=host).first()
    before = row.severity if row is not None else Severity.OK.value
    current = run_severity(ctx.results)
    return {
        "severity": before,
        "since": row.since.isoformat() if row is not None else None,
        "changed": current is not None and current != before,
        "current": current,
    }


def state_end_record(
    *, definition: str, host: str, severity: str, run_id: int, now: datetime, notified: bool
) -> None:
    """Record that run ``run_id``, ending at ``now``, found ``severity`` on
    ``host``: ``since`` moves only when the severity changes. Call it inside
    the transaction of the run's fenced end write, after that write matched.
    Raises what the database raises."""
    changes: dict = {
        "severity": severity,
        "since": Case(When(severity=severity, then=F("since")), default=Value(now)),
        "last_run_id": run_id,
        "last_run_at": now,
    }
    if notified:
        changes["last_notified_at"] = now
    rows = MonitorState.objects.filter(definition=definition, host=host)
    if rows.update(**changes):
        return
    try:
        with transaction.atomic():  # a savepoint: a concurrent first run's insert leaves the end write usable
            MonitorState.objects.create(
                definition=definition, host=host, severity=severity, since=now, last_run_id=run_id,
                last_run_at=now, last_notified_at=now if notified else None,
            )
    except IntegrityError:
        rows.update(**changes)


def state_end_write(ctx: NodeContext, *, now: datetime) -> Callable[[], None] | None:
    """What the end of ``ctx``'s run, at ``now``, writes of the monitoring
    state (state_end_record, to call inside its fenced end write); None when
    the run found no severity."""
    severity = run_severity(ctx.results)
    if severity is None:
        return None
    definition, host = monitor_key(ctx)
    notified = any(entry["type"] == "notify" and entry["output"].get("succeeded") for entry in ctx.results.values())
    return functools.partial(
        state_end_record, definition=definition, host=host, severity=severity, run_id=ctx.run_id, now=now,
        notified=notified,
    )


@dataclass(frozen=True)
class Decision:
    """What a notify node with ``notify_on`` does: ``notice`` is the kind sent
    ("problem", "reminder", "resolved", "" for a plain one), None for none;
    ``reason`` says why in a few words; ``previous`` is what the receivers
    heard before ({"severity", "since"}), None when nothing."""

    notice: str | None
    reason: str
    previous: dict | None = None
    # The claim made (set by notice_claim): the row's id and version after it, and what it replaced.
    claim: dict | None = field(default=None, compare=False)


def notice_decide(
    *, mode: str, renotify_after: float | None, severity: str | None, previous: MonitorNotice | None,
    now: datetime, run_id: int,
) -> Decision:
    """Whether a notify node with ``notify_on`` ``mode`` speaks, for a run
    (``run_id``) that found ``severity``, when its receivers last heard
    ``previous`` (None: nothing yet, taken as "ok"). Pure.

    - "problem": a warning or critical is notified (again at most every
      ``renotify_after`` seconds while it lasts, when given, else every run);
    - "change": a severity other than the one last notified is, and a problem
      that lasts is reminded every ``renotify_after`` seconds when given;
    - in both, a return to ok or info after a problem is a "resolved" notice.
    A claim this same run made (an earlier delivery of the node) is sent again."""
    heard = {"severity": previous.severity, "since": previous.since.isoformat()} if previous is not None else None
    if previous is not None and previous.run_id == run_id:
        before = (
            {"severity": previous.previous_severity, "since": previous.previous_since.isoformat()}
            if previous.previous_severity and previous.previous_since is not None else None
        )
        return Decision(previous.notice, "sent again: an earlier delivery of this node claimed it", before)
    if severity is None:
        return Decision(None, "the run found no severity to notify about", heard)
    was = previous.severity if previous is not None else Severity.OK.value
    if severity != was:
        if severity in PROBLEMS:
            return Decision("problem", f"{was} → {severity}", heard)
        if was in PROBLEMS:
            return Decision("resolved", f"{was} → {severity}", heard)
        if mode == CHANGE:
            return Decision("", f"{was} → {severity}", heard)
        return Decision(None, f"{severity} is not a problem", heard)
    if severity not in PROBLEMS:
        return Decision(None, f"still {severity}" if previous is not None else f"{severity}, nothing to tell", heard)
    assert previous is not None  # a problem equal to what was heard was heard
    if renotify_after is None:
        if mode == PROBLEM:
            return Decision("reminder", f"still {severity}", heard)
        return Decision(None, f"still {severity}, as notified at {_clock(previous.notified_at)}", heard)
    elapsed = (now - previous.notified_at).total_seconds()
    if elapsed >= renotify_after:
        return Decision("reminder", f"still {severity}, last notified {elapsed:.0f}s ago", heard)
    return Decision(
        None, f"still {severity}, notified {elapsed:.0f}s ago (reminders every {renotify_after:g}s)", heard
    )


def notice_claim(
    *, ctx: NodeContext, severity: str | None, mode: str, renotify_after: float | None
) -> Decision:
    """Decide (notice_decide) whether ``ctx``'s notify node speaks, and when
    it does, claim the notice: the node's MonitorNotice row moves to
    ``severity`` with one update conditional on the version read, so of two
    runs deciding at once one claims and the other decides again from what
    the first wrote. Raises what the database raises."""
    definition, host = monitor_key(ctx)
    rows = MonitorNotice.objects.filter(definition=definition, host=host, node_id=ctx.node_id)
    for _ in range(_CLAIM_TRIES):
        previous = rows.first()
        now = ctx.now()
        decision = notice_decide(
            mode=mode, renotify_after=renotify_after, severity=severity, previous=previous, now=now,
            run_id=ctx.run_id,
        )
        if decision.notice is None or (previous is not None and previous.run_id == ctx.run_id):
            return decision
        assert severity is not None
        if previous is None:
            try:
                with transaction.atomic():
                    row = MonitorNotice.objects.create(
                        definition=definition, host=host, node_id=ctx.node_id, severity=severity, since=now,
                        notified_at=now, run_id=ctx.run_id, notice=decision.notice,
                    )
            except IntegrityError:
                continue  # another run claimed first: decide again from what it wrote
            return Decision(decision.notice, decision.reason, decision.previous,
                            claim={"id": row.pk, "version": row.version, "replaced": None})
        since = previous.since if severity == previous.severity else now
        if rows.filter(version=previous.version).update(
            severity=severity, since=since, notified_at=now, run_id=ctx.run_id, notice=decision.notice,
            previous_severity=previous.severity, previous_since=previous.since, version=F("version") + 1,
        ):
            replaced = {name: getattr(previous, name) for name in _CLAIMED}
            return Decision(decision.notice, decision.reason, decision.previous,
                            claim={"id": previous.pk, "version": previous.version + 1, "replaced": replaced})
    return Decision(None, "other runs kept claiming this notice; left to them")


_CLAIMED = ("severity", "since", "notified_at", "run_id", "notice", "previous_severity", "previous_since")


def notice_release(decision: Decision) -> None:
    """Give back the claim of ``decision`` after its notice could not be sent,
    unless another run has claimed since: the next run decides as if it had
    not been made. Raises what the database raises."""
    claim = decision.claim
    if not claim:
        return
    rows = MonitorNotice.objects.filter(pk=claim["id"], version=claim["version"])
    if claim["replaced"] is None:
        rows.delete()
    else:
        rows.update(**claim["replaced"], version=F("version") + 1)


def _clock(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
