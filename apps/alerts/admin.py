from django.contrib import admin

from apps.alerts.models import Alert, Incident


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "status", "severity", "created_at")
    list_filter = ("status", "severity")


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "host", "status", "severity", "occurrences", "last_seen")
    list_filter = ("status", "severity", "source")
    search_fields = ("name", "host", "fingerprint")
