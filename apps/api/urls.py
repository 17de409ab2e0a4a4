"""The API's routes, mounted at /api/v1/ by config/urls.py: one router per resource, from
the app that owns it. Adding a resource is one import and one ``api.add_router`` line."""
from django.urls import path

from apps.alerts import api as alerts
from apps.api.site import api
from apps.orchestration.api import definitions, runs, schedules

api.add_router("/definitions", definitions.router)
api.add_router("/schedules", schedules.router)
api.add_router("/runs", runs.router)
api.add_router("/alerts", alerts.router)

urlpatterns = [path("", api.urls)]
