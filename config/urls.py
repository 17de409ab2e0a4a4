from django.contrib import admin
from django.urls import include, path

from apps.api import views as api_views
from apps.orchestration import views

urlpatterns = [
    path("admin/", admin.site.urls),
    # The REST API and its OpenAPI document (/api/v1/openapi.json) and docs page (/api/v1/docs).
    path("api/v1/", include("apps.api.urls")),
    # Prometheus scrapes this path by default; it needs an API key with scope metrics unless METRICS_PUBLIC=1.
    path("metrics", views.metrics, name="metrics"),
    # Liveness: the process answers; touches no database and no secret.
    path("healthz", api_views.healthz, name="healthz"),
    # The operator console: runs, definitions and schedules, behind Django's login.
    path("", include("apps.console.urls")),
]
