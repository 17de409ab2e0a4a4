"""Deleting old finished runs, in batches that never hold a lock for long."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from apps.orchestration.models import AlertDelivery, PipelineRun, RunLogLine, StageExecution

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
    ``dry_run`` nothing is deleted and the counts are what would be. Returns
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
        return PruneCounts(runs=candidates.count(), stages=stages, cutoff=cutoff, log_lines=log_lines)
    counts = PruneCounts(runs=0, stages=0, cutoff=cutoff)
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
        "event=runs.pruned runs=%s stages=%s log_lines=%s cutoff=%s statuses=%s alert_deliveries=%s",
        counts.runs, counts.stages, counts.log_lines, cutoff.isoformat(), ",".join(chosen), counts.deliveries,
    )
    return counts
