"""Beat's scheduler: django-celery-beat's DatabaseScheduler for the built-in
entries (the recovery sweep, pruning), and the pipeline schedules fired by
the project itself, from one indexed query over what is due.

django-celery-beat keeps every schedule in memory and, with a tick's row
written back at once, reloads all of them after every tick it sends: its
work per tick grows with the number of schedules, and a minute's herd of a
thousand ticks took the better part of that minute. Here its scheduler
only holds the few built-in entries (the pipeline PeriodicTasks are left
out of it and still stored and edited through it), and each pass of beat's
loop

1. takes or renews the beat lease: a beat that does not hold it fires
   nothing (and says so, once, with the holder's name);
2. brings the pipeline schedules' clocks in step with their PeriodicTasks
   when django-celery-beat's change marker moved (and every five minutes);
3. fires every pipeline schedule that is due (ticks.schedules_fire: the
   runs' rows first, in one transaction, then their messages), then sleeps
   until the next one is due or ``max_interval`` passes.

A database or broker that cannot be reached is logged in one line, never a
traceback, and the pass is tried again.
"""
from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from django.db import DatabaseError, InterfaceError, close_old_connections
from django_celery_beat.schedulers import SCHEDULE_SYNC_MAX_INTERVAL, DatabaseScheduler, ModelEntry

from apps.broker.names import RUN_SCHEDULED_TASK

logger = logging.getLogger("workers.beat")

# Fire passes in a row before the built-in entries get their turn again (a herd larger than a batch).
_BATCHES_PER_PASS = 20


class QuietEntry(ModelEntry):
    """ModelEntry whose last run is written with an UPDATE: a save() would move
    the change marker and make beat reload every schedule after its own write."""

    def save(self):
        type(self.model)._default_manager.filter(pk=self.model.pk).update(
            last_run_at=self.model.last_run_at, total_run_count=self.model.total_run_count
        )


class PipelineScheduler(DatabaseScheduler):
    """DatabaseScheduler for the built-in entries; pipeline schedules fired
    from their clocks (apps.orchestration.ticks.schedules_fire), under the
    beat lease (apps.orchestration.beatstate)."""

    Entry = QuietEntry

    def __init__(self, *args, **kwargs):
        from apps.orchestration.beatstate import holder_name

        self.holder = holder_name()
        self._holding: bool | None = None  # None: not known yet
        self._refused_by: str | None = None
        self._clocks_stale = True
        self._clocks_synced = 0.0
        self._failing: str | None = None
        super().__init__(*args, **kwargs)

    def enabled_models_qs(self):
        # The pipeline schedules are fired from their clocks, not from django-celery-beat's heap.
        return super().enabled_models_qs().exclude(task=RUN_SCHEDULED_TASK)

    def schedule_changed(self):
        changed = super().schedule_changed()
        if changed:
            self._clocks_stale = True
        return changed

    def apply_entry(self, entry, producer=None):
        logger.info("Scheduler: Sending due task %s (%s)", entry.name, entry.task)
        try:
            self.apply_async(entry, producer=producer, advance=False)
        except Exception as exc:  # noqa: BLE001 - kombu raises several kinds for an unreachable broker
            # One line: the entries are periodic, the next one comes at its time.
            logger.error("event=beat.send_failed entry=%s error=%s", entry.name, f"{type(exc).__name__}: {exc}")

    def tick(self, *args, **kwargs):
        """One pass of beat's loop (see the module's docstring); returns the seconds to sleep."""
        try:
            if not self._lease():
                return min(self.max_interval, 5.0)
            wait = super().tick(*args, **kwargs)
            pipeline_wait = self._fire()
        except (DatabaseError, InterfaceError) as exc:
            self._failed(exc)
            close_old_connections()
            return self.max_interval
        if self._failing is not None:
            logger.warning("event=beat.recovered after=%s", self._failing)
            self._failing = None
        return max(0.0, min(wait, pipeline_wait, self.max_interval))

    def close(self):
        from apps.orchestration.beatstate import lease_release

        super().close()
        if self._holding:
            try:
                lease_release(holder=self.holder)
            except (DatabaseError, InterfaceError):
                pass  # it expires on its own

    def _lease(self) -> bool:
        """Take or renew the lease; log a change of who holds it, once."""
        from apps.orchestration.beatstate import lease_status, lease_take

        holding = lease_take(holder=self.holder)
        if holding and self._holding is not True:
            logger.info("event=beat.lease_taken holder=%s", self.holder)
            self._clocks_stale = True
        elif not holding:
            status = lease_status()
            holder = status.holder if status is not None else "?"
            if self._holding is not False or holder != self._refused_by:
                logger.warning(
                    "event=beat.standby holder=%s me=%s reason=another beat holds the lease: this one fires "
                    "nothing, and takes over if that one stops renewing it for %ss",
                    holder, self.holder, _seconds(),
                )
            self._refused_by = holder
        self._holding = holding
        return holding

    def _fire(self) -> float:
        """Sync the clocks if needed, fire what is due; seconds until the next due time."""
        from apps.orchestration.beatstate import schedule_states_sync
        from apps.orchestration.ticks import FIRE_BATCH, schedules_fire, schedules_next_due_in

        if self._clocks_stale or time.monotonic() - self._clocks_synced >= SCHEDULE_SYNC_MAX_INTERVAL:
            self._clocks_stale = False
            self._clocks_synced = time.monotonic()
            changed = schedule_states_sync(now=datetime.now(UTC))
            if changed:
                logger.info("event=beat.schedules_synced changed=%d", changed)
        for _ in range(_BATCHES_PER_PASS):
            fired = schedules_fire(holder=self.holder)
            if fired.lease_lost:
                logger.warning("event=beat.lease_lost holder=%s: this beat stops firing", self.holder)
                self._holding = False
                return 0.0
            if fired.ticks:
                logger.info(
                    "event=beat.fired ticks=%d runs=%d", fired.ticks, len(fired.runs),
                )
            if fired.ticks < FIRE_BATCH:
                break
        due_in = schedules_next_due_in()
        return self.max_interval if due_in is None else due_in

    def _failed(self, exc: Exception) -> None:
        what = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
        if self._failing is None:
            logger.error("event=beat.database_error error=%s (retrying every %ss)", what, self.max_interval)
        self._failing = what


def _seconds() -> str:
    from django.conf import settings

    return f"{settings.BEAT_LEASE_SECONDS:g}"
