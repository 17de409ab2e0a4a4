"""Named notification channels: a driver and its non-secret options, chosen by name in a notify node."""
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from apps.notify.base import channel_config_validate


class NotificationChannel(models.Model):
    name = models.SlugField(
        max_length=100, unique=True, help_text='Name a notify node uses: {"channel": "ops-slack"}.'
    )
    driver = models.CharField(max_length=50, help_text="Notify driver: console, webhook, slack, pagerduty, email.")
    config = models.JSONField(
        default=dict,
        blank=True,
        help_text="The driver's options. Secrets are never stored: name the variable that "
        'holds them ("webhook_url_env": "OPS_SLACK_URL").',
    )
    is_active = models.BooleanField(default=True, help_text="Inactive channels cannot be notified.")
    description = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=~Q(name=""), name="notificationchannel_name_not_empty"),
            models.CheckConstraint(condition=~Q(driver=""), name="notificationchannel_driver_not_empty"),
        ]

    def __str__(self):
        return f"{self.name} ({self.driver})"

    def config_problems(self) -> dict[str, list[str]]:
        """Problems with ``driver`` and ``config``, by field (empty when both are valid)."""
        return channel_config_validate(driver=self.driver, config=self.config)

    def clean(self):
        problems = self.config_problems()
        if problems:
            raise ValidationError(problems)

    def save(self, *args, **kwargs):
        # The driver's check also refuses inline secrets: run it on every save, not
        # only in forms and services, so no code path can store a secret here.
        self.clean()
        super().save(*args, **kwargs)
