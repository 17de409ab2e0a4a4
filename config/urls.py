from django.contrib import admin
from django.urls import path

from apps.orchestration import views

urlpatterns = [
    path("admin/", admin.site.urls),
    # Prometheus scrapes this path by default; it exposes run counts and definition names, unauthenticated.
    path("metrics", views.metrics, name="metrics"),
]
