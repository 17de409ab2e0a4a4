from django.contrib import admin

from apps.notify.models import NotificationChannel


@admin.register(NotificationChannel)
class NotificationChannelAdmin(admin.ModelAdmin):
    list_display = ("name", "driver", "is_active", "updated_at")
    list_filter = ("driver", "is_active")
    search_fields = ("name", "description")
