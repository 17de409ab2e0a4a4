"""The admin: runs and stages shown read-only and scrubbed, searched and
filtered; the cancel action through the service; definitions validated on
save; static files served by WhiteNoise."""
import html
import json
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from whitenoise.middleware import WhiteNoiseFileResponse

from apps.orchestration import engine
from apps.orchestration.models import PipelineDefinition, PipelineRun, StageExecution
from apps.orchestration.validation import validate_definition
from apps.secrets import secret_get
from tests.support import make_run

pytestmark = pytest.mark.django_db

RUNS = "/admin/orchestration/pipelinerun/"
DEFINITIONS = "/admin/orchestration/pipelinedefinition/"

NODES = [
    {"id": "first", "type": "context", "config": {"include": ["memory"]}, "next": "second"},
    {"id": "second", "type": "transform", "config": {"mapping": {"m": "first.checks.memory.value"}}},
]
# A webhook URL a node read from the environment: it and its token parts must never be shown.
SECRET_URL = "https://hooks.example.com/services/T0ADM1N1/B0ADM1N2/adm1nTok3nXYZ"
SECRET_PARTS = ("T0ADM1N1", "B0ADM1N2", "adm1nTok3nXYZ")
SLACK_SECRET = "https://hooks.slack.example/services/S1ackT0k3n99"


def listed(response) -> list[int]:
    """The run ids a changelist page shows, in order."""
    assert response.status_code == 200
    return [int(pk) for pk in re.findall(r'name="_selected_action" value="(\d+)"', response.content.decode())]


@pytest.fixture
def secrets_known(monkeypatch):
    """One secret read the way a node reads it (remembered by this process), one in a conventional variable."""
    monkeypatch.setenv("ADMIN_TEST_HOOK_URL", SECRET_URL)
    monkeypatch.setenv("SLACK_WEBHOOK_URL", SLACK_SECRET)
    assert secret_get({"url_env": "ADMIN_TEST_HOOK_URL"}, "url", default_env=None, what="webhook URL") == SECRET_URL


@pytest.fixture
def failed_run(secrets_known) -> PipelineRun:
    """A failed run whose recorded error, result, payload and stages hold secrets and hostile text
    (as an older version, or a process that did not know the secret, could have written them)."""
    run = make_run(
        NODES,
        status="failed",
        trigger="schedule",
        finished_at=timezone.now(),
        duration_ms=1234.5,
        error=f"POST {SECRET_URL} failed <script>alert(1)</script>\x1b[2J",
        payload={"hook": SLACK_SECRET},
        result={"node_results": {"second": {"error": f"echo {SECRET_URL}"}}},
    )
    now = timezone.now()
    second = StageExecution.objects.create(
        run=run, node_id="second", node_type="transform", status="failed",
        errors=[f"refused by {SECRET_URL}"], output={"echo": "<b>bold</b>"}, duration_ms=3.0,
    )
    first = StageExecution.objects.create(
        run=run, node_id="first", node_type="context", status="succeeded",
        output={"token": "adm1nTok3nXYZ"}, duration_ms=2500.0,
    )
    # Created out of order on purpose: the inline must follow execution order (started_at, id).
    StageExecution.objects.filter(pk=first.pk).update(started_at=now - timedelta(seconds=5))
    StageExecution.objects.filter(pk=second.pk).update(started_at=now - timedelta(seconds=2))
    return run


def assert_no_secret(page: str) -> None:
    for text in (SECRET_URL, SLACK_SECRET, "S1ackT0k3n99", *SECRET_PARTS):
        assert text not in page
    assert "[redacted]" in page


def test_run_list_shows_runs_newest_first_with_scrubbed_escaped_short_errors(admin_client, failed_run):
    queued = make_run(NODES)
    response = admin_client.get(RUNS)
    assert listed(response) == [queued.pk, failed_run.pk]
    page = response.content.decode()
    assert_no_secret(page)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    assert "\x1b" not in page and "\\x1b[2J" in page
    assert "1.2s" in page  # the duration column


def test_search_by_run_id_by_trace_id_and_by_any_text_never_errors(admin_client, failed_run):
    other = make_run(NODES, trace_id="trace-other-0001")
    assert listed(admin_client.get(RUNS, {"q": str(failed_run.pk)})) == [failed_run.pk]
    assert listed(admin_client.get(RUNS, {"q": failed_run.trace_id})) == [failed_run.pk]
    assert listed(admin_client.get(RUNS, {"q": "trace-other"})) == [other.pk]
    assert listed(admin_client.get(RUNS, {"q": "not a number"})) == []
    assert listed(admin_client.get(RUNS, {"q": "99999999999999999999999999"})) == []
    assert listed(admin_client.get(RUNS, {"q": "-1"})) == []


def test_filters_by_status_trigger_definition_and_date(admin_client, failed_run):
    queued = make_run(NODES)
    PipelineRun.objects.filter(pk=queued.pk).update(created_at=timezone.now() - timedelta(days=30))
    assert listed(admin_client.get(RUNS, {"status__exact": "failed"})) == [failed_run.pk]
    assert listed(admin_client.get(RUNS, {"trigger__exact": "cli"})) == [queued.pk]
    assert listed(admin_client.get(RUNS, {"definition_name": "p"})) == [failed_run.pk, queued.pk]
    assert listed(admin_client.get(RUNS, {"definition_name": "other"})) == []
    # As the date filter's own "Past 7 days" link writes it.
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    since = {"created_at__gte": str(today - timedelta(days=7)), "created_at__lt": str(today + timedelta(days=1))}
    assert listed(admin_client.get(RUNS, since)) == [failed_run.pk]


def test_run_page_shows_stages_in_execution_order_pretty_scrubbed_and_escaped(admin_client, failed_run):
    response = admin_client.get(f"{RUNS}{failed_run.pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    assert re.findall(r'class="field-node_id">\s*<p>([^<]*)</p>', page) == ["first", "second"]
    assert "2.5s" in page and "3ms" in page  # stage durations
    assert_no_secret(page)
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page
    # JSON pretty-printed: one key per line, indented.
    assert html.escape('{\n  "hook": "[redacted]"\n}') in page
    # Read-only: no form fields to edit the run or its stages, no save button.
    assert 'name="_save"' not in page and 'name="status"' not in page and 'name="stages-0-status"' not in page


def test_runs_cannot_be_added_changed_or_deleted(admin_client, failed_run):
    assert f"{RUNS}add/" not in admin_client.get(RUNS).content.decode()  # no "Add" button, nor in the side menu
    assert admin_client.get(f"{RUNS}add/").status_code == 403
    assert admin_client.post(f"{RUNS}{failed_run.pk}/change/", {"status": "completed"}).status_code == 403
    assert admin_client.post(f"{RUNS}{failed_run.pk}/delete/", {"post": "yes"}).status_code == 403
    failed_run.refresh_from_db()
    assert failed_run.status == "failed"
    assert StageExecution.objects.filter(run=failed_run).count() == 2


def test_cancel_action_cancels_a_queued_run_asks_a_running_one_and_refuses_a_finished_one(admin_client):
    queued = make_run(NODES)
    finished = engine.run_execute(run_id=make_run(NODES).pk)
    assert finished.status == "completed"
    # Held by a live worker (its lease runs for another minute), at its first node.
    running = make_run(
        NODES,
        status="running", claimed_by="host:1:token", current_node="first",
        started_at=timezone.now(), lease_expires_at=timezone.now() + timedelta(minutes=1),
    )
    response = admin_client.post(
        RUNS,
        {"action": "cancel_runs", "_selected_action": [queued.pk, finished.pk, running.pk], "index": 0},
        follow=True,
    )
    page = html.unescape(response.content.decode())
    assert f"Run {queued.pk} cancelled." in page
    assert f"Run {finished.pk} not cancelled: Run {finished.pk} has already finished (completed)" in page
    assert f"Cancellation of run {running.pk} requested: node 'first' is not interrupted" in page
    queued.refresh_from_db(), finished.refresh_from_db(), running.refresh_from_db()
    assert queued.status == "cancelled" and queued.error == "Cancelled on request before it started"
    assert finished.status == "completed"
    assert running.status == "running" and running.cancel_requested_at is not None
    again = admin_client.post(RUNS, {"action": "cancel_runs", "_selected_action": [queued.pk], "index": 0}, follow=True)
    assert f"Run {queued.pk} is already cancelled." in html.unescape(again.content.decode())


def test_retry_actions_launch_new_runs_through_the_retry_service(admin_client, settings):
    settings.CELERY_BROKER_IS_EMBEDDED = False  # the test's transaction never commits: nothing is sent
    finished = engine.run_execute(run_id=make_run(NODES).pk)
    queued = make_run(NODES)
    response = admin_client.post(
        RUNS, {"action": "retry_runs", "_selected_action": [finished.pk, queued.pk], "index": 0}, follow=True
    )
    page = html.unescape(response.content.decode())
    retry = PipelineRun.objects.get(retry_of=finished)
    assert f"Run {finished.pk} retried as run {retry.pk} (queued)." in page
    assert f"Run {queued.pk} not retried: Run {queued.pk} is still queued" in page
    assert (retry.trigger, retry.status) == ("retry", "queued")
    response = admin_client.post(
        RUNS, {"action": "retry_runs_from_failed", "_selected_action": [finished.pk], "index": 0}, follow=True
    )
    assert f"Run {finished.pk} not retried: Run {finished.pk} did not fail at a node" in html.unescape(
        response.content.decode()
    )
    assert PipelineRun.objects.filter(retry_of=finished).count() == 1


def test_retry_actions_refuse_a_run_retried_already_naming_its_retry(admin_client, settings):
    settings.CELERY_BROKER_IS_EMBEDDED = False  # the test's transaction never commits: nothing is sent
    finished = engine.run_execute(run_id=make_run(NODES).pk)
    other = engine.run_execute(run_id=make_run(NODES).pk)
    admin_client.post(RUNS, {"action": "retry_runs", "_selected_action": [finished.pk], "index": 0})
    retry = PipelineRun.objects.get(retry_of=finished)
    response = admin_client.post(
        RUNS, {"action": "retry_runs", "_selected_action": [finished.pk, other.pk], "index": 0}, follow=True
    )
    page = html.unescape(response.content.decode())
    assert re.search(
        rf'class="error">Run {finished.pk} not retried: it was already retried as run {retry.pk} '
        r"\(retry_run --force retries it again\)\.<", page
    )
    # Refused per run: the other selected run is retried.
    assert f"Run {other.pk} retried as run {PipelineRun.objects.get(retry_of=other).pk} (queued)." in page
    assert PipelineRun.objects.filter(retry_of=finished).count() == 1
    # The list shows what each run retries (its column, no look-up of that run), and so does the run's page.
    listing = html.unescape(admin_client.get(RUNS).content.decode())
    assert "Retry of" in listing
    assert re.search(rf'<td class="field-retry_of_shown">{finished.pk}</td>', listing)
    shown = html.unescape(admin_client.get(f"{RUNS}{retry.pk}/change/").content.decode())
    assert f"/admin/orchestration/pipelinerun/{finished.pk}/change/" in shown


def test_a_user_who_may_only_view_runs_sees_them_but_cannot_cancel_them(client, django_user_model):
    queued = make_run(NODES)
    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_pipelinerun", "view_stageexecution"]))
    client.force_login(viewer)
    page = client.get(RUNS).content.decode()
    assert str(queued.pk) in page and "cancel_runs" not in page and "retry_runs" not in page
    response = client.post(RUNS, {"action": "cancel_runs", "_selected_action": [queued.pk], "index": 0})
    queued.refresh_from_db()
    assert response.status_code in (200, 302) and queued.status == "queued"


def test_definition_admin_refuses_an_invalid_config_with_the_validators_messages(admin_client):
    config = {"version": "1.0", "nodes": [{"id": "a", "type": "nope"}, {"id": "b", "type": "context", "config": {"include": ["<b>x"]}}]}
    response = admin_client.post(
        f"{DEFINITIONS}add/", {"name": "broken", "description": "", "config": json.dumps(config), "tags": "[]", "is_active": "on"}
    )
    assert response.status_code == 200
    page = response.content.decode()
    messages = validate_definition(config)
    assert len(messages) == 3
    for message in messages:
        assert html.escape(message) in page
    assert not PipelineDefinition.objects.filter(name="broken").exists()


def test_definition_admin_saves_a_valid_config_and_syncs_its_schedule(admin_client):
    config = {"version": "1.0", "nodes": NODES, "schedule": {"every": 300}}
    response = admin_client.post(
        f"{DEFINITIONS}add/", {"name": "timed", "description": "", "config": json.dumps(config), "tags": "[]", "is_active": "on"}
    )
    assert response.status_code == 302
    definition = PipelineDefinition.objects.get(name="timed")
    assert definition.version == "1.0" and definition.config == config
    assert PeriodicTask.objects.get(name__contains="timed").enabled
    listing = admin_client.get(DEFINITIONS).content.decode()
    assert "timed" in listing and 'alt="True"' in listing


def test_admin_css_is_served_by_whitenoise_after_collectstatic(settings, tmp_path):
    settings.STATIC_ROOT = tmp_path / "static"
    settings.STATIC_ROOT.mkdir()
    settings.DEBUG = False
    # Nothing collected yet: nothing served (so what follows is served from STATIC_ROOT).
    assert Client().get("/static/admin/css/base.css").status_code == 404
    call_command("collectstatic", "--noinput", verbosity=0)
    response = Client().get("/static/admin/css/base.css", HTTP_ACCEPT_ENCODING="gzip")
    assert response.status_code == 200
    assert isinstance(response, WhiteNoiseFileResponse)
    assert response["Content-Type"].startswith("text/css")
    assert response["Content-Encoding"] == "gzip"  # the compressed copy collectstatic made


def definition_form(name: str, config_text: str, tags: str = "[]") -> dict:
    return {"name": name, "description": "", "config": config_text, "tags": tags, "is_active": "on"}


@pytest.mark.parametrize(
    "config_text, message",
    [
        ('{"a":' * 100_000 + "1" + "}" * 100_000, "Invalid JSON: nested deeper than 64 levels"),
        ("[" * 100_000 + "]" * 100_000, "Invalid JSON: nested deeper than 64 levels"),
        ('{"version": "1.0", "nodes": ' + "7" * 5000 + "}", "Invalid JSON: a number longer than 40 characters (777777777777…)"),
        ('{"version": "1.0", "nodes": [], "x": NaN}', "Invalid JSON: NaN is not allowed (numbers must be finite)"),
        ('{"version": "1.0", "description": "a\\u0000b", "nodes": []}', "Invalid JSON: a NUL character in the text at description"),
        (
            json.dumps({"version": "1.0", "nodes": NODES, "schedule": {"cron": "0 9 * * *", "timezone": "A" * 300}}),
            "schedule.timezone is not a known IANA time zone: " + "A" * 62 + "…",
        ),
    ],
    ids=["deep-object", "deep-list", "5000-digits", "nan", "nul", "long-timezone"],
)
def test_definition_admin_shows_the_message_for_hostile_json_and_stores_nothing(admin_client, config_text, message):
    for url in (f"{DEFINITIONS}add/",):
        response = admin_client.post(url, definition_form("hostile", config_text))
        assert response.status_code == 200
        assert html.escape(message) in response.content.decode()
    assert not PipelineDefinition.objects.filter(name="hostile").exists()
    assert not PeriodicTask.objects.exists()


def test_definition_admin_change_form_refuses_hostile_json_and_keeps_the_stored_config(admin_client):
    stored = PipelineDefinition.objects.create(name="kept", config={"version": "1.0", "nodes": NODES})
    deep = '{"a":' * 100_000 + "1" + "}" * 100_000
    for field, text in (("config", deep), ("tags", "[" * 100_000 + "]" * 100_000), ("tags", "[" + "9" * 5000 + "]")):
        form = definition_form("kept", json.dumps(stored.config))
        form[field] = text
        response = admin_client.post(f"{DEFINITIONS}{stored.pk}/change/", form)
        assert response.status_code == 200, field
        assert "Invalid JSON: " in response.content.decode()
    stored.refresh_from_db()
    assert stored.config == {"version": "1.0", "nodes": NODES} and stored.tags == []


def test_view_site_leads_to_the_console_and_the_admin_is_named_for_the_product(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert re.search(r'<a href="/">View site</a>', page), page
    assert "<title>Data fixes | Pipeline launcher admin</title>" in page
    assert '<a href="/admin/">Pipeline launcher admin</a>' in page
    assert "Django administration" not in page
