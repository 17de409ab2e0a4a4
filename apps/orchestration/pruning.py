"""Deleting old finished runs, in batches that never hold a lock for long, and the monitoring
state no run has refreshed since."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from apps.orchestration.models import (
    AlertDelivery,
    MonitorNotice,
    MonitorState,
    PipelineRun,
    RunLogLine,
    StageExecution,
)

logger = logging.getLogger("apps.orchestration.pruning")

# Runs deleted per statement (each in its own transaction): short locks, bounded memory.
PRUNE_BATCH_SIZE = 500


@dataclass
class PruneCounts:
    runs: int
    stages: int
    cutoff: datetime  # runs created before this were candidates
    deliveries: int = 0  # expired alert dedup records deleted
    log_lines: int = 0  # the runs' kept log lines (RunLogLine), deleted with them
    states: int | None = None  # state board rows no run refreshed since the cutoff (None: not pruned)
    notices: int = 0  # notice records of theirs (MonitorNotice), none claimed since the cutoff either


def pipeline_runs_prune(
    *, older_than: timedelta, statuses=None, dry_run: bool = False, batch_size: int = PRUNE_BATCH_SIZE
) -> PruneCounts:
    """Delete finished runs created more than ``older_than`` ago, with their
    StageExecution and RunLogLine rows (the cascade), optionally only those whose status is
    one of ``statuses``; queued and running runs are never deleted. Alert
    dedup records (AlertDelivery) whose window has passed are deleted too:
    they dedup nothing any more, whatever age the runs are pruned at.

    Deletes ``batch_size`` runs per transaction, so no lock is held on the
    whole table and a concurrent writer waits at most one batch. With
    ``dry_run`` nothing is deleted and the counts are what would be.

    Without ``statuses`` (every finished run), the monitoring state goes too
    (monitor_states_prune): what a definition last found on a host, when no run
    has refreshed it since the cutoff. Returns
    the counts of rows deleted (or that would be). Raises ValueError for an
    age that is not positive, a status that is not terminal, or a batch size
    below 1.
    """
    if older_than <= timedelta(0):
        raise ValueError("the age must be above 0")
    terminal = [str(status) for status in PipelineRun.TERMINAL]
    chosen = terminal if statuses is None else list(statuses)
    if not chosen or set(chosen) - set(terminal):
        raise ValueError(f"statuses must be among {', '.join(terminal)}")
    if batch_size < 1:
        raise ValueError("the batch size must be at least 1")
    # created_at is stamped by the creating process's clock; at a scale of days the skew does not matter.
    cutoff = timezone.now() - older_than
    candidates = PipelineRun.objects.filter(created_at__lt=cutoff, status__in=chosen)
    if dry_run:
        stages = StageExecution.objects.filter(run__in=candidates.values("pk")).count()
        log_lines = RunLogLine.objects.filter(run__in=candidates.values("pk")).count()
        counts = PruneCounts(runs=candidates.count(), stages=stages, cutoff=cutoff, log_lines=log_lines)
        if statuses is None:
            counts.states, counts.notices = monitor_states_prune(cutoff=cutoff, dry_run=True)
        return counts
    counts = PruneCounts(runs=0, stages=0, cutoff=cutoff)
    if statuses is None:
        counts.states, counts.notices = monitor_states_prune(cutoff=cutoff)
    # One statement: the table holds one row per notification and definition within the dedup windows.
    counts.deliveries, _ = AlertDelivery.objects.filter(expires_at__lt=timezone.now()).delete()
    while True:
        with transaction.atomic():
            ids = list(candidates.order_by("pk").values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            # The filter is repeated so a row that changed since it was read is left alone; only ids are loaded.
            _, deleted = candidates.filter(pk__in=ids).only("pk").delete()
        counts.runs += deleted.get(PipelineRun._meta.label, 0)
        counts.stages += deleted.get(StageExecution._meta.label, 0)
        counts.log_lines += deleted.get(RunLogLine._meta.label, 0)
    logger.info(
        "event=runs.pruned runs=%s stages=%s log_lines=%s cutoff=%s statuses=%s alert_deliveries=%s"
        " states=%s notices=%s",
        counts.runs, counts.stages, counts.log_lines, cutoff.isoformat(), ",".join(chosen), counts.deliveries,
        "-" if counts.states is None else counts.states, counts.notices,
    )
    return counts


def monitor_states_prune(*, cutoff: datetime, dry_run: bool = False) -> tuple[int, int]:
    """Delete the state board's rows (MonitorState) that no run has refreshed since ``cutoff``:
    a definition deleted, renamed or no longer run, a host gone. With them go the notice records
    (MonitorNotice) of the same definition and host claimed before the cutoff, unless a state of
    theirs was refreshed since; a run that finds a problem there later starts afresh and
    notifies it. Two statements; a state a run refreshes meanwhile stays (the age is checked
    again as each row is deleted), and a notice deleted under a run deciding to notify is
    decided again from nothing (monitoring.notice_claim). Returns the counts of states and
    notices deleted (or, with ``dry_run``, that would be)."""
    stale_states = MonitorState.objects.filter(last_run_at__lt=cutoff)
    refreshed = MonitorState.objects.filter(
        definition=OuterRef("definition"), host=OuterRef("host"), last_run_at__gte=cutoff
    )
    stale_notices = MonitorNotice.objects.filter(notified_at__lt=cutoff).exclude(Exists(refreshed))
    if dry_run:
        return stale_states.count(), stale_notices.count()
    notices, _ = stale_notices.delete()
    states, _ = stale_states.delete()
    return states, notices
