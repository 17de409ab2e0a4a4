"""The console's pages through Django's test client: who may see and do what,
what the pages show, their live refresh, and what they do to runs and
schedules (real database, real engine; the browser tests drive the same pages
in Chromium)."""
from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.console.security import CONTENT_SECURITY_POLICY
from apps.orchestration import engine
from apps.orchestration.models import PipelineDefinition, PipelineRun
from tests.hostile import HOSTILE_TEXT
from tests.orchestration.test_retry import failed_run, hooks  # noqa: F401 - fixtures used below
from tests.support import make_run

pytestmark = pytest.mark.django_db

SCHEDULED = {
    "version": "1.0",
    "schedule": {"every": 3600},
    "nodes": [{"id": "shape", "type": "transform", "config": {"mapping": {"x": "payload.x"}, "defaults": {"x": 0}}}],
}


def _user(name: str, *permissions: str) -> User:
    user = User.objects.create_user(name, password="pw")
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename, content_type__app_label="orchestration"))
    return user


@pytest.fixture
def operator() -> Client:
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(_user("operator", "view_pipelinerun", "operate_pipelines"))
    return client


@pytest.fixture
def viewer() -> Client:
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(_user("viewer", "view_pipelinerun"))
    return client


def _ids(html: bytes, pattern: str) -> list[str]:
    return re.findall(pattern, html.decode())


PAGES = ["/runs/", "/definitions/", "/schedules/"]


def test_an_anonymous_visitor_is_sent_to_the_login_page_from_every_page_and_action():
    run = make_run()
    client = Client(HTTP_HOST="127.0.0.1")
    for url in [*PAGES, f"/runs/{run.pk}/", f"/runs/{run.pk}/live/", "/runs/rows/", "/runs/definitions/", "/definitions/p/"]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/?next="), url
    for url in [f"/runs/{run.pk}/cancel/", f"/runs/{run.pk}/retry/", "/definitions/p/run/"]:
        assert client.post(url)["Location"].startswith("/login/"), url
    assert PipelineRun.objects.get(pk=run.pk).status == "queued" and PipelineRun.objects.count() == 1


def test_the_login_page_signs_in_and_carries_the_policy(db):
    User.objects.create_user("op", password="secret-pw")
    client = Client(HTTP_HOST="127.0.0.1", enforce_csrf_checks=True)
    page = client.get("/login/")
    assert page["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())[1]
    refused = client.post("/login/", {"username": "op", "password": "wrong", "csrfmiddlewaretoken": token})
    assert refused.status_code == 200 and b"did not match" in refused.content
    signed_in = client.post("/login/", {"username": "op", "password": "secret-pw", "csrfmiddlewaretoken": token})
    assert signed_in.status_code == 302 and signed_in["Location"] == "/runs/"


def test_a_signed_in_user_without_the_view_permission_is_refused(db):
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(_user("nobody"))
    for url in [*PAGES, "/runs/definitions/"]:
        assert client.get(url).status_code == 403, url


def test_a_viewer_sees_the_pages_without_buttons_and_every_action_is_refused(viewer, failed_run):  # noqa: F811
    PipelineDefinition.objects.create(name="hourly", config=SCHEDULED)
    queued = make_run()
    for url in [*PAGES, f"/runs/{failed_run.pk}/", f"/runs/{queued.pk}/", "/definitions/hourly/"]:
        page = viewer.get(url)
        assert page.status_code == 200 and page["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, url
        for marker in (b'id="cancel"', b'id="retry"', b'id="retry-failed"', b'id="run-form"', b'class="pause"'):
            assert marker not in page.content, (url, marker)
    posts = [
        f"/runs/{queued.pk}/cancel/", f"/runs/{failed_run.pk}/retry/", "/definitions/hourly/run/",
        "/schedules/hourly/pause/", "/schedules/hourly/resume/", "/schedules/hourly/run/",
    ]
    for url in posts:
        assert viewer.post(url, {"stop_node": "on"}).status_code == 403, url
    assert viewer.get(f"/runs/{queued.pk}/cancel/").status_code == 403
    assert PipelineRun.objects.get(pk=queued.pk).status == "queued"
    assert PipelineRun.objects.count() == 2 and not PipelineDefinition.objects.get(name="hourly").schedule_paused


def test_every_value_from_a_run_is_shown_as_text(operator):
    hostile = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2"><a href="javascript:alert(1)">x</a>'
    nodes = [{"id": "echo", "type": "transform", "config": {"mapping": {"note": "payload.note"}}}]
    run = engine.run_execute(run_id=make_run(nodes, name="echo", payload={"note": hostile}).pk)
    assert run.status == "completed" and hostile in str(run.result)
    # Trace ids and errors from elsewhere (an API client, a remote error body) reach the row as they came.
    PipelineRun.objects.filter(pk=run.pk).update(trace_id=hostile[:64], error=hostile)
    for url in (f"/runs/{run.pk}/", f"/runs/?q={run.pk}", "/runs/"):
        html = operator.get(url).content.decode()
        assert "<script>window" not in html and "<img src=x" not in html and 'href="javascript:' not in html, url
    page = operator.get(f"/runs/{run.pk}/").content.decode()
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page


def test_the_runs_list_filters_searches_and_pages_without_counting(operator):
    runs = [make_run(name="alpha" if i % 2 else "beta", trace_id=f"trace-{i:03d}") for i in range(60)]
    page = operator.get("/runs/")
    listed = _ids(page.content, r'class="run" data-run-id="(\d+)"')
    assert listed == [str(run.pk) for run in reversed(runs)][:50]
    older = re.search(r'id="older" href="([^"]+)"', page.content.decode())[1].replace("&amp;", "&")
    assert _ids(operator.get(f"/runs/{older}").content, r'data-run-id="(\d+)"') == [str(r.pk) for r in reversed(runs)][50:]
    assert len(_ids(operator.get("/runs/?definition=alpha").content, r'data-run-id="(\d+)"')) == 30
    assert _ids(operator.get("/runs/?q=trace-007").content, r'data-run-id="(\d+)"') == [str(runs[7].pk)]
    assert _ids(operator.get(f"/runs/?q={runs[3].pk}").content, r'data-run-id="(\d+)"') == [str(runs[3].pk)]
    problem = operator.get("/runs/?status=bogus&since=forever")
    assert b"status must be one of" in problem.content and b'data-run-id' not in problem.content
    with CaptureQueriesContext(connection) as few:
        operator.get("/runs/?status=queued")
    assert not any("COUNT(" in query["sql"].upper() for query in few.captured_queries)


def test_the_live_parts_answer_204_until_something_changes(operator):
    run = make_run()
    page = operator.get(f"/runs/{run.pk}/").content.decode()
    live_url = re.search(r'hx-get="(/runs/\d+/live/\?v=[0-9a-f]+)"', page)[1]
    assert operator.get(live_url).status_code == 204
    PipelineRun.objects.filter(pk=run.pk).update(status="running", current_node="shape")
    changed = operator.get(live_url)
    assert changed.status_code == 200 and b"running" in changed.content
    rows = re.search(r'hx-get="(/runs/rows/[^"]+)"', operator.get("/runs/").content.decode())[1].replace("&amp;", "&")
    assert operator.get(rows).status_code == 204
    make_run()
    assert operator.get(rows).status_code == 200
    done = engine.run_execute(run_id=make_run().pk)
    assert b"hx-get" not in operator.get(f"/runs/{done.pk}/").content.split(b'id="run-live"')[1][:60]


def test_cancel_of_a_queued_run_and_of_a_cancelled_one(operator):
    run = make_run()
    confirm = operator.get(f"/runs/{run.pk}/cancel/")
    assert b'name="stop_node"' in confirm.content and b'id="confirm"' in confirm.content
    assert operator.post(f"/runs/{run.pk}/cancel/")["Location"] == f"/runs/{run.pk}/"
    assert PipelineRun.objects.get(pk=run.pk).status == "cancelled"
    again = operator.post(f"/runs/{run.pk}/cancel/", follow=True)
    assert f"Run {run.pk} is already cancelled.".encode() in again.content


def test_retry_and_retry_from_the_failed_node(operator, failed_run):  # noqa: F811
    page = operator.get(f"/runs/{failed_run.pk}/").content
    assert b'id="retry-failed"' in page and b'id="cancel"' not in page
    answer = operator.post(f"/runs/{failed_run.pk}/retry/", {"from_failed": "1"})
    retry = PipelineRun.objects.get(retry_of=failed_run)
    assert answer["Location"] == f"/runs/{retry.pk}/" and retry.reused_results.keys() == {"announce"}
    again = operator.post(f"/runs/{failed_run.pk}/retry/", follow=True)
    assert f"was already retried as run {retry.pk}".encode() in again.content
    assert PipelineRun.objects.filter(retry_of=failed_run).count() == 1
    operator.post(f"/runs/{failed_run.pk}/retry/", {"force": "on"})
    assert PipelineRun.objects.filter(retry_of=failed_run).count() == 2
    links = operator.get(f"/runs/{failed_run.pk}/").content
    assert b'id="retried-as"' in links and f'id="retry-of" href="/runs/{failed_run.pk}/"'.encode() in operator.get(
        f"/runs/{retry.pk}/"
    ).content


def test_run_now_launches_through_the_launcher_and_refuses_bad_payloads(operator):
    PipelineDefinition.objects.create(name="hourly", config=SCHEDULED)
    bad = operator.post("/definitions/hourly/run/", {"payload": '{"x": '})
    assert bad.status_code == 400 and b"Invalid JSON in payload" in bad.content and PipelineRun.objects.count() == 0
    not_object = operator.post("/definitions/hourly/run/", {"payload": "[1]"})
    assert b"Payload must be a JSON object" in not_object.content and PipelineRun.objects.count() == 0
    answer = operator.post("/definitions/hourly/run/", {"payload": '{"x": 5}'})
    run = PipelineRun.objects.get()
    assert answer["Location"] == f"/runs/{run.pk}/" and run.trigger == "console" and run.payload == {"x": 5}
    page = operator.get("/definitions/hourly/").content
    assert b'id="dry-run"' in page and b"=== DRY RUN ===" in page and f'data-run-id="{run.pk}"'.encode() in page


def test_schedules_pause_resume_and_run_now(operator):
    from apps.orchestration.schedules import schedule_sync

    definition = PipelineDefinition.objects.create(name="hourly", config=SCHEDULED)
    schedule_sync(definition=definition)
    state = r'data-definition="hourly">.*?class="schedule-state">(\w+)<'

    def row() -> str:
        return re.search(r'<tr class="schedule" data-definition="hourly">.*?</tr>',
                         operator.get("/schedules/").content.decode(), re.S)[0]

    def action(button: str) -> str:
        return re.search(rf'<form method="post" action="([^"]+)">[^<]*<input[^>]*>\s*<button class="{button}"',
                         row())[1]

    assert re.search(state, row(), re.S)[1] == "active"
    assert re.search(r'<a href="([^"]+)">hourly</a>', row())[1] == "/definitions/hourly/"
    assert action("pause") == "/schedules/hourly/pause/" and action("run-now") == "/schedules/hourly/run/"
    operator.post(action("pause"))
    assert re.search(state, row(), re.S)[1] == "paused"
    assert PipelineDefinition.objects.get(name="hourly").schedule_paused
    operator.post(action("resume"))
    assert re.search(state, row(), re.S)[1] == "active"
    answer = operator.post(action("run-now"))
    run = PipelineRun.objects.get()
    assert run.trigger == "schedule" and answer["Location"] == f"/runs/{run.pk}/"
    assert re.search(r'class="last-run"><a href="([^"]+)">', row())[1] == f"/runs/{run.pk}/"
    unknown = operator.post("/schedules/nope/pause/", follow=True)
    assert b"Pipeline definition not found: nope" in unknown.content


def test_a_runs_kept_log_lines_are_on_its_page_and_new_ones_are_appended_while_it_goes_on(operator):
    nodes = [{"id": "tell", "type": "notify", "config": {"driver": "console"}}]
    done = engine.run_execute(run_id=make_run(nodes, name="tell").pk)
    page = operator.get(f"/runs/{done.pk}/").content.decode()
    lines = re.findall(r'<div class="log-line" data-seq="(\d+)">(.*?)</div>', page, re.S)
    assert lines and any("apps.notify.console [tell]" in text and "Pipeline: tell (run" in text for _, text in lines)
    assert 'id="log-poll"' not in page  # an ended run's lines are all there
    last = lines[-1][0]
    ended = operator.get(f"/runs/{done.pk}/logs/?after={last}")
    assert ended.status_code == 200 and b"log-line" not in ended.content and b"log-poll" not in ended.content
    running = make_run(status="running", current_node="tell")
    poll = re.search(r'id="log-poll" hx-get="([^"]+)"', operator.get(f"/runs/{running.pk}/").content.decode())[1]
    assert operator.get(poll).status_code == 204
    assert operator.get(f"/runs/{done.pk}/logs/?after=0").content.count(b'class="log-line"') == len(lines)


def test_hostile_names_and_searches_are_refused_in_words_and_change_nothing(operator):
    PipelineDefinition.objects.create(name="hourly", config=SCHEDULED)
    client = Client(HTTP_HOST="127.0.0.1", raise_request_exception=False)
    client.force_login(User.objects.get(username="operator"))
    for url in ("/runs/?q=%00abc", "/runs/?q=%1b[31m"):
        page = client.get(url)
        assert page.status_code == 200 and b"search must be a run id or a trace id" in page.content, url
    rows = client.get("/runs/rows/?q=ab%00c")
    assert rows.status_code == 200 and b"No runs match." in rows.content
    # The definition box's suggestions: none for a text no name can hold, and no error (an empty
    # or blank text is the box before typing: the first names).
    for text in [text for text in (*HOSTILE_TEXT, "a\x00b", "hour ly", "x" * 101) if text.strip()]:
        sent = quote(text.encode("utf-8", "surrogatepass"), safe="")  # as a browser would, lone surrogates too
        suggested = client.get(f"/runs/definitions/?definition={sent}")
        assert suggested.status_code == 200 and b"<option" not in suggested.content, text
    assert b'<option value="hourly">' in client.get("/runs/definitions/", {"definition": "OUR"}).content
    assert client.get("/definitions/a%00b/").status_code == 404
    for url in ("/schedules/a%00b/pause/", "/schedules/a%00b/run/"):
        answer = client.post(url, follow=True)
        assert answer.status_code == 200 and b"Pipeline definition not found: a\\x00b" in answer.content, url
    refused = client.post("/definitions/a%00b/run/", {"payload": "{}"})
    assert refused.status_code == 404 and PipelineRun.objects.count() == 0
    assert not PipelineDefinition.objects.get(name="hourly").schedule_paused


def _walk(client: Client, path: str, row: str) -> tuple[list[str], list[str]]:
    """Every page of a list by name from ``path`` through its "Next page" links: the names each
    row pattern ``row`` finds, and the query strings followed."""
    names, followed = [], []
    url = path
    for _ in range(10):
        page = client.get(url)
        assert page.status_code == 200, url
        html = page.content.decode()
        names += re.findall(row, html)
        following = re.search(r'id="next" href="([^"]+)"', html)
        if not following:
            return names, followed
        query = following[1].replace("&amp;", "&")
        followed.append(query)
        url = path.split("?")[0] + query
        assert 'id="first" href="' in client.get(url).content.decode()
    raise AssertionError("more pages than the rows make")


def test_definitions_and_schedules_are_listed_a_page_at_a_time_and_filtered_by_name(operator):
    from apps.console.pages import NAME_PAGE_SIZE
    from apps.orchestration.schedules import schedule_sync

    assert NAME_PAGE_SIZE == 100  # the pages below: watch-000..099, 100..199, 200..204
    names = [f"watch-{i:03d}" for i in range(205)]
    for name in names:
        schedule_sync(definition=PipelineDefinition.objects.create(name=name, config=SCHEDULED))
    PipelineDefinition.objects.create(name="unscheduled", config={**SCHEDULED, "schedule": None})

    listed, followed = _walk(operator, "/definitions/", r'<tr class="definition[^"]*" data-name="([^"]+)"')
    assert listed == ["unscheduled", *names] and len(followed) == 2
    assert followed[0] == f"?after=watch-{NAME_PAGE_SIZE - 2:03d}"
    scheduled, _ = _walk(operator, "/schedules/", r'<tr class="schedule" data-definition="([^"]+)"')
    assert scheduled == names
    assert b'id="first"' not in operator.get("/schedules/").content

    # A part of the name, in any case; the filter is kept on the next page's link.
    listed, followed = _walk(operator, "/definitions/?q=WATCH", r'data-name="([^"]+)"')
    assert listed == names and followed == ["?q=WATCH&after=watch-099", "?q=WATCH&after=watch-199"]
    # A page exactly full has no next page.
    listed, followed = _walk(operator, "/definitions/?q=watch-1", r'data-name="([^"]+)"')
    assert listed == names[100:200] and followed == []
    scheduled, _ = _walk(operator, "/schedules/?q=-00", r'data-definition="([^"]+)"')
    assert scheduled == names[:10]
    # "pipeline" is in the name of every schedule's task, in no definition's name.
    assert b"No schedules match." in operator.get("/schedules/?q=pipeline").content

    # A filter no name can hold is said in words; a cursor that is no name starts at the first page.
    for path in ("/definitions/", "/schedules/"):
        for bad in ("%00", "a%20b", "%3Cscript%3E", "x" * 101):
            page = operator.get(f"{path}?q={bad}")
            assert page.status_code == 200 and b'id="filter-problem"' in page.content, (path, bad)
            assert b"match." in page.content
        first = operator.get(f"{path}?after=%00").content.decode()
        assert 'data-name="watch-000"' in first or 'data-definition="watch-000"' in first
