"""Alerts, deduplicated by fingerprint, grouped into incidents."""
from django.db import models


class Incident(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        RESOLVED = "resolved", "Resolved"

    title = models.CharField(max_length=300)
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.OPEN, db_index=True
    )
    severity = models.CharField(max_length=20, default="warning", help_text="Worst severity seen.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"incident {self.pk} ({self.status})"


class Alert(models.Model):
    class Status(models.TextChoices):
        FIRING = "firing", "Firing"
        RESOLVED = "resolved", "Resolved"

    fingerprint = models.CharField(max_length=128, unique=True, help_text="Deduplication key.")
    source = models.CharField(max_length=50, help_text="Parser that read it.")
    name = models.CharField(max_length=300)
    severity = models.CharField(max_length=20, default="warning")
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.FIRING, db_index=True
    )
    host = models.CharField(max_length=255, blank=True, default="")
    description = models.TextField(blank=True, default="")
    labels = models.JSONField(default=dict, blank=True)
    incident = models.ForeignKey(
        Incident, null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts"
    )
    occurrences = models.PositiveIntegerField(default=1, help_text="Times this alert was received.")
    first_seen = models.DateTimeField(auto_now_add=True, db_index=True)
    last_seen = models.DateTimeField(auto_now=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_seen"]

    def __str__(self):
        return f"alert {self.pk} ({self.status})"
