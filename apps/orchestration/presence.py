"""Which workers are live, per queue, as the workers themselves record it: each
worker renews one row per queue it consumes on its own timer (a consumer step,
workers/celery.py) and expires them at a warm shutdown. A worker that died
stops counting when its rows expire, after a few missed renewals.

/metrics reads these rows (a handful: workers times their queues) instead of
asking the workers over the broker, which waits seconds for replies.
"""
from __future__ import annotations

from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models.functions import Now

from apps.orchestration.models import WorkerQueue

# Rows of a worker gone this long are deleted (before that, its queues still show, with 0 live).
FORGET_AFTER = timedelta(days=1)
# A worker counts as live for this many renewal intervals after its last renewal.
MISSED_RENEWALS = 3


def worker_presence_renew(*, worker: str, queues: list[str], interval: float) -> None:
    """Record that ``worker`` consumes ``queues`` now: its row of each is renewed (or
    created) to expire after MISSED_RENEWALS intervals of ``interval`` seconds, on the
    database's clock; its rows of queues it no longer consumes are expired; rows of any
    worker gone for FORGET_AFTER are deleted. Raises DatabaseError."""
    expires = Now() + timedelta(seconds=interval * MISSED_RENEWALS)
    mine = WorkerQueue.objects.filter(worker=worker)
    with transaction.atomic():
        renewed = set(mine.filter(queue__in=queues).values_list("queue", flat=True))
        mine.filter(queue__in=renewed).update(renewed_at=Now(), expires_at=expires)
        mine.exclude(queue__in=queues).filter(expires_at__gt=Now()).update(expires_at=Now())
    for queue in sorted(set(queues) - renewed):
        try:
            with transaction.atomic():
                WorkerQueue.objects.create(worker=worker, queue=queue, renewed_at=Now(), expires_at=expires)
        except IntegrityError:  # a worker of the same name (restarted) made it first: renew that row
            mine.filter(queue=queue).update(renewed_at=Now(), expires_at=expires)
    WorkerQueue.objects.filter(expires_at__lt=Now() - FORGET_AFTER).delete()


def worker_presence_end(*, worker: str) -> None:
    """``worker`` stops consuming (a warm shutdown, a lost broker connection): its rows
    expire now, so it no longer counts as live. Raises DatabaseError."""
    WorkerQueue.objects.filter(worker=worker, expires_at__gt=Now()).update(expires_at=Now())
