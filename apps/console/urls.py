from django.contrib.auth import views as auth_views
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.urls import path
from django.views.generic import RedirectView

from apps.console import definitions, runs, schedules
from apps.console.security import with_policy

app_name = "console"


_login_view = auth_views.LoginView.as_view(redirect_authenticated_user=True)


def _login(request: HttpRequest, *args, **kwargs) -> HttpResponseBase:
    """Django's login page, with the console's policy headers."""
    return with_policy(_login_view(request, *args, **kwargs))


urlpatterns = [
    path("", RedirectView.as_view(pattern_name="console:runs"), name="home"),
    path("login/", _login, name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("runs/", runs.runs_list, name="runs"),
    path("runs/rows/", runs.run_rows, name="run_rows"),
    path("runs/definitions/", runs.run_definition_names, name="run_definition_names"),
    path("runs/<int:run_id>/", runs.run_detail, name="run"),
    path("runs/<int:run_id>/live/", runs.run_live, name="run_live"),
    path("runs/<int:run_id>/logs/", runs.run_logs, name="run_logs"),
    path("runs/<int:run_id>/cancel/", runs.run_cancel, name="run_cancel"),
    path("runs/<int:run_id>/retry/", runs.run_retry, name="run_retry"),
    path("definitions/", definitions.definitions_list, name="definitions"),
    path("definitions/<str:name>/", definitions.definition_detail, name="definition"),
    path("definitions/<str:name>/run/", definitions.definition_run, name="definition_run"),
    path("schedules/", schedules.schedules_list, name="schedules"),
    path("schedules/<str:name>/pause/", schedules.schedule_pause, name="schedule_pause"),
    path("schedules/<str:name>/resume/", schedules.schedule_resume, name="schedule_resume"),
    path("schedules/<str:name>/run/", schedules.schedule_run, name="schedule_run"),
]
