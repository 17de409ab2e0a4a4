"""Reads of notification channels."""
from __future__ import annotations

from apps.notify.models import NotificationChannel


def notification_channel_get(*, name: str) -> NotificationChannel | None:
    """The channel called ``name`` (active or not), or None."""
    return NotificationChannel.objects.filter(name=name).first()
