"""The recovery sweep: every run that should be executing gets a message.

The PipelineRun row is the truth and a broker message only a wake-up, so a
lost message (a broker restarted without its data, an enqueue that failed
after the commit) or a lost worker (killed with its whole process group, a
host gone) must not leave a run behind. The sweep re-publishes

- a ``queued`` run with no message waiting for it in its queue (its host's
  queue, or the shared one), and
- a ``running`` run whose lease ran out (database time),

once each has gone without a message for RUN_RECOVERY_GRACE_SECONDS. On
Redis the sweep looks for each run's own message in its queue; an AMQP broker
only counts a queue's messages, so there a queue holding fewer messages than
it has queued runs is short by the difference, and that many of its oldest
quiet runs are sent again (``_short_by_count``): a healthy backlog, however
long, is never sent twice. It runs
at every worker start, periodically inside every worker (workers/celery.py),
from beat (``orchestration.recover_runs``) and by hand
(``manage.py recover_runs``). Several sweepers at once are harmless: a run
is re-published only by the one whose conditional UPDATE of ``published_at``
matched, and a duplicate message is dropped by the claim.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Q
from django.db.models.functions import Now

from apps.orchestration import dispatch
from apps.orchestration.lease import lease_expired
from apps.orchestration.models import PipelineRun

logger = logging.getLogger("apps.orchestration.recovery")

# At most this many runs are looked at per sweep; the next sweep takes the rest.
BATCH = 500


@dataclass(frozen=True)
class Recovered:
    run_id: int
    trace_id: str
    reason: str  # "lost_message" or "lease_expired"


def runs_recover(*, grace_seconds: float | None = None) -> list[Recovered]:
    """Re-publish the runs that need a message and have none; returns them.

    Raises DatabaseError when the database cannot be read; a run whose
    message cannot be sent stays as it is for the next sweep.
    """
    grace = settings.RUN_RECOVERY_GRACE_SECONDS if grace_seconds is None else grace_seconds
    quiet = Q(published_at__isnull=True) | Q(published_at__lt=Now() - timedelta(seconds=grace))
    candidates = _candidates(quiet)
    if not candidates:
        return []
    # Each run's message waits in its host's queue, or in the shared one; only the candidates are looked for.
    by_host: dict[str, set[int]] = {}
    for row in candidates:
        by_host.setdefault(row["target_host"] or "", set()).add(row["pk"])
    look = dispatch.runs_waiting(runs=by_host)
    waiting = None if look is None else look.found
    if waiting is None:
        waiting = _waiting_by_count(candidates)
    recovered = []
    for row in candidates:
        if waiting is not None and row["pk"] in waiting:
            continue  # its message waits behind others: nothing is lost
        if waiting is None and row["status"] == PipelineRun.Status.QUEUED and row["published_at"] is not None:
            continue  # the queue cannot be looked into: only runs never sent are known to be lost
        reason = "lost_message" if row["status"] == PipelineRun.Status.QUEUED else "lease_expired"
        # Only the sweeper whose update matches sends the message.
        mine = PipelineRun.objects.filter(quiet, pk=row["pk"], status=row["status"])
        if row["status"] == PipelineRun.Status.RUNNING:
            mine = mine.filter(lease_expired())
        if not mine.update(published_at=Now()):
            continue
        try:
            dispatch.run_publish(
                run_id=row["pk"], definition=row["origin"], trace_id=row["trace_id"], host=row["target_host"]
            )
        except Exception as exc:  # noqa: BLE001 - kombu raises several kinds for an unreachable broker
            logger.error(
                "event=run.recover_failed run_id=%s trace_id=%s reason=%s error=%s",
                row["pk"], row["trace_id"], reason, f"{type(exc).__name__}: {exc}",
                extra={"run_id": row["pk"], "trace_id": row["trace_id"]},
            )
            continue
        logger.warning(
            "event=run.recovered run_id=%s trace_id=%s definition=%s reason=%s",
            row["pk"], row["trace_id"], row["origin"], reason,
            extra={"event": "run.recovered", "run_id": row["pk"], "trace_id": row["trace_id"], "reason": reason},
        )
        recovered.append(Recovered(row["pk"], row["trace_id"], reason))
    return recovered


def _waiting_by_count(candidates: list[dict]) -> set[int] | None:
    """The queued ``candidates`` taken to have a message waiting, judged from
    how many messages each queue holds (an AMQP broker); None when the
    broker cannot count them.

    A queue short of messages (fewer than its queued runs) is missing at
    least the difference; messages are taken oldest first, so the runs
    without one are taken to be the oldest: that many of the oldest
    candidates are reported without one (a guess that errs only towards a
    duplicate, which the claim drops). The queue is counted before the runs,
    so a run taken from the queue and claimed in between makes the count
    err towards sending too little, which the next sweep corrects."""
    queued = [row for row in candidates if row["status"] == PipelineRun.Status.QUEUED]
    hosts = sorted({row["target_host"] or "" for row in queued})
    counts = dispatch.queue_counts(hosts=hosts) if hosts else {}
    if counts is None:
        return None
    runs = dict(
        PipelineRun.objects.filter(status=PipelineRun.Status.QUEUED, target_host__in=hosts)
        .order_by().values_list("target_host").annotate(n=Count("pk"))
    )
    waiting = set()
    for host in hosts:
        short = max(0, runs.get(host, 0) - counts[host])
        mine = [row["pk"] for row in queued if (row["target_host"] or "") == host]  # oldest first
        waiting.update(mine[short:])
    return waiting


def _candidates(quiet: Q) -> list[dict]:
    """The oldest BATCH runs that are ``quiet`` and queued, or running with an
    expired lease, oldest first. One query per status, each read in the order
    of the (status, created_at, id) index and stopped after BATCH rows: on
    either database its cost follows the live runs, not the history (one query
    with an OR and another order lets SQLite's planner, with ANALYZE's
    statistics, choose a scan of the whole table)."""
    fields = ("pk", "status", "published_at", "trace_id", "origin", "target_host", "created_at")
    queued = PipelineRun.objects.filter(quiet, status=PipelineRun.Status.QUEUED)
    lost = PipelineRun.objects.filter(quiet, lease_expired(), status=PipelineRun.Status.RUNNING)
    rows = [row for runs in (queued, lost) for row in runs.order_by("created_at", "pk").values(*fields)[:BATCH]]
    return sorted(rows, key=lambda row: (row["created_at"], row["pk"]))[:BATCH]
