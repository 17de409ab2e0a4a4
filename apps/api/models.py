"""API keys: who may call the API, with which scopes. The key itself is never stored."""
from django.db import models

# What a key may be allowed to do; each route names the one scope it needs.
SCOPES = ("alerts", "runs:read", "runs:write", "metrics")


class ApiKey(models.Model):
    name = models.CharField(max_length=100, unique=True, help_text="The operator's name for the key.")
    prefix = models.CharField(
        max_length=16, unique=True, help_text="The key's public first part, used to find its row."
    )
    key_hash = models.CharField(max_length=64, help_text="SHA-256 (hex) of the whole key; the key itself is not kept.")
    scopes = models.JSONField(default=list, help_text=f"What the key may do: some of {', '.join(SCOPES)}.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    last_used_at = models.DateTimeField(
        null=True, blank=True, help_text="When the key was last accepted (written at most once a minute)."
    )

    class Meta:
        ordering = ["name"]
        verbose_name = "API key"

    def __str__(self):
        return f"{self.name} ({self.prefix})"
