"""The console as an operator uses it, in a real headless Chromium: logging in, finding a
run, watching one live, cancelling (with and without stopping the node), retrying from the
failed node, pausing a schedule; hostile values shown as text; a view-only user sees no
buttons and the action URLs refuse them.

The runs are executed by a real worker; nodes that must be running while the test looks are
held at a gate (tests.support.Gate) the test opens. Every page visited is saved as a
screenshot (see conftest.py). The ids, classes and URLs are those the console's templates
promise (its DOM contract), not incidental markup.
"""
from __future__ import annotations

import http.client
import inspect
import json
import re
import uuid
from urllib.parse import quote

import pytest
from django.test import Client
from selenium.webdriver.common.by import By

from apps.orchestration.models import PipelineDefinition, PipelineRun, RunLogLine, StageExecution
from tests.console.conftest import (
    go,
    login,
    mark_window,
    path_of,
    text,
    texts,
    wait_text,
    window_kept,
)
from tests.httpserver import start_server
from tests.support import PROCESS_TIMEOUT, TINY_NODES, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.subprocess]

# How long a cancel that stops the node may take to end the run here (the target on an
# idle machine is 2 s; this one is shared and loaded).
STOP_DEADLINE = 30


@pytest.fixture(scope="module")
def hooks():
    """Two recording webhook servers for the ``flaky`` definition's nodes (reset by each test
    that uses them)."""
    a, stop_a = start_server()
    b, stop_b = start_server()
    try:
        yield a, b
    finally:
        stop_a()
        stop_b()


@pytest.fixture(scope="module", name="base_env")
def console_env(base_env, module_gate, hooks):
    """The worker's and web service's environment, with the gate and the webhooks reachable."""
    a, b = hooks
    return {**base_env, **module_gate.env, "HOOK_A_URL": a.url("/announce"), "HOOK_B_URL": b.url("/check")}


@pytest.fixture
def gate(module_gate):
    """The module's gate, closed at the start of the test and opened at its end."""
    module_gate.reset()
    try:
        yield module_gate
    finally:
        module_gate.open()


def definition(name: str, nodes: list[dict], **config) -> PipelineDefinition:
    return PipelineDefinition.objects.create(name=name, config={"version": "1.0", "nodes": nodes, **config})


def held_definition(gate, name: str = "held", then: list[dict] | None = None) -> PipelineDefinition:
    """A definition whose first node, ``hold``, waits at ``gate``; then ``then`` (a last ``after``
    node by default)."""
    then = then or [{"id": "after", "type": "transform", "config": {"mapping": {"x": "payload.x"}, "defaults": {"x": 0}}}]
    return definition(name, [gate.node("hold", then[0]["id"]), *then], defaults=gate.DEFAULTS)


def launch(cli, name: str, *args: str) -> PipelineRun:
    """Launch definition ``name`` with run_pipeline (``args`` added); the stored run."""
    result = cli("run_pipeline", "--definition", name, "--json", *args)
    assert result.exit_code in (0, 1), result.stderr
    return PipelineRun.objects.get(pk=json.loads(result.stdout)["run_id"])


def row(run_id: int) -> str:
    return f'tr.run[data-run-id="{run_id}"]'


def node(node_id: str) -> str:
    return f'li.node[data-node-id="{node_id}"]'


def click(browser, selector: str) -> None:
    browser.find_element(By.CSS_SELECTOR, selector).click()


def wait_path(browser, pattern: str) -> re.Match:
    """Wait for the browser to show a page whose path matches ``pattern`` (fully), loaded."""
    def at():
        found = re.fullmatch(pattern, path_of(browser))
        return found if found and browser.execute_script("return document.readyState") == "complete" else None

    try:
        return wait_for(at, interval=0.1, what=f"a page at {pattern}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the browser is at {browser.current_url}") from None


def test_an_anonymous_visitor_logs_in_and_finds_a_run_by_its_trace_id(browser, shot, operator, cli, worker):
    definition("tiny", TINY_NODES)
    wanted = f"find-me-{uuid.uuid4().hex[:12]}"
    found = launch(cli, "tiny", "--trace-id", wanted, "--wait")
    other = launch(cli, "tiny", "--trace-id", f"other-{uuid.uuid4().hex[:12]}", "--wait")

    browser.delete_all_cookies()
    go(browser, "/")  # the runs list, which sends a visitor to log in first
    wait_path(browser, r"/login/\?next=(/runs/|%2Fruns%2F)")
    go(browser, f"/runs/{found.pk}/")
    wait_path(browser, rf"/login/\?next=(/runs/{found.pk}/|%2Fruns%2F{found.pk}%2F)")
    go(browser, "/runs/")
    wait_path(browser, r"/login/\?next=(/runs/|%2Fruns%2F)")
    assert browser.find_elements(By.CSS_SELECTOR, "table#runs") == []
    shot("login")
    browser.find_element(By.NAME, "username").send_keys(operator.username)
    browser.find_element(By.NAME, "password").send_keys("console-tests-password")
    click(browser, "button[type=submit]")
    wait_path(browser, r"/runs/")  # where it was going
    assert browser.find_elements(By.CSS_SELECTOR, row(found.pk)) and browser.find_elements(By.CSS_SELECTOR, row(other.pk))
    shot("runs")

    browser.find_element(By.CSS_SELECTOR, "form#filters input[name=q]").send_keys(wanted)
    click(browser, "button#apply")
    wait_path(browser, r"/runs/\?.*\bq=" + re.escape(wanted) + r"\b.*")
    assert browser.execute_script(
        "return Array.from(document.querySelectorAll('tr.run'), r => r.dataset.runId);"
    ) == [str(found.pk)]
    assert text(browser, f"{row(found.pk)} td.status span.status.status-completed") == "completed"
    shot("found")

    click(browser, f"{row(found.pk)} a.run-link")
    wait_path(browser, f"/runs/{found.pk}/")
    assert text(browser, "#run-trace-id") == wanted
    wait_text(browser, "#run-status", "completed")
    shot("run")


def test_statuses_are_told_apart_by_colour_as_well_as_by_word(browser, shot, operator):
    from django.utils import timezone

    from tests.support import make_run

    ended = {
        status: make_run(name="tiny", status=status, started_at=timezone.now(), finished_at=timezone.now())
        for status in ("completed", "failed", "cancelled")
    }
    login(browser, operator)
    go(browser, "/runs/")
    colours = {
        status: browser.execute_script(
            "return getComputedStyle(document.querySelector(arguments[0])).backgroundColor;",
            f"{row(run.pk)} td.status span.status.status-{status}",
        )
        for status, run in ended.items()
    }
    shot("runs")
    assert {status: text(browser, f"{row(run.pk)} td.status") for status, run in ended.items()} == {
        status: status for status in ended
    }
    assert len(set(colours.values())) == len(colours), f"statuses share a colour: {colours}"


def test_the_definition_filter_suggests_names_as_one_types_and_filters_the_list(browser, shot, operator):
    from tests.support import make_run

    runs = {name: make_run(name=name) for name in ("disk-full", "disk-slow", "memory")}
    PipelineDefinition.objects.create(name="Disk-Quota", config={})
    login(browser, operator)
    go(browser, "/runs/")
    field = browser.find_element(By.CSS_SELECTOR, "form#filters input[name=definition]")
    field.send_keys("DISK")

    seen: list[list[str]] = [[]]

    def suggested():
        seen[0] = browser.execute_script(
            "return Array.from(document.querySelectorAll('datalist#definition-names option'), o => o.value);")
        return seen[0] == ["Disk-Quota", "disk-full", "disk-slow"]

    try:
        wait_for(suggested, interval=0.1, what="the names holding DISK suggested")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the page suggests {seen[0]}") from None
    shot("definition-suggestions")
    field.clear()
    field.send_keys("disk-slow")
    click(browser, "button#apply")
    wait_path(browser, r"/runs/\?.*\bdefinition=disk-slow\b.*")
    assert browser.execute_script(
        "return Array.from(document.querySelectorAll('tr.run'), r => r.dataset.runId);"
    ) == [str(runs["disk-slow"].pk)]
    assert browser.find_element(By.CSS_SELECTOR, "form#filters input[name=definition]").get_attribute("value") == "disk-slow"


def test_a_run_is_watched_from_the_list_to_its_end_without_a_reload(browser, shot, operator, cli, worker, gate):
    # Held at the gate first (so the test sees it queued or running however slow the machine),
    # then a node of 4 s, then a last one.
    slow = {"id": "slow", "type": "context", "config": {"include": ["cpu"], "options": {"cpu": {"interval": 4}}}}
    after = {"id": "after", "type": "transform", "config": {"mapping": {"x": "payload.x"}, "defaults": {"x": 0}}}
    held_definition(gate, "watched", then=[{**slow, "next": "after"}, after])
    login(browser, operator)
    go(browser, "/runs/")
    marker = mark_window(browser)
    shot("list-before")

    run = launch(cli, "watched")
    # The new run appears in the open list, and its status moves on, with no reload.
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, row(run.pk)), interval=0.2, what="the new run in the list")
    wait_for(gate.reached, what="the run to reach its gate")
    wait_text(browser, f"{row(run.pk)} td.status span.status", "running")
    assert window_kept(browser, marker), "the runs list was reloaded"
    shot("list-new-run")

    click(browser, f"{row(run.pk)} a.run-link")
    wait_path(browser, f"/runs/{run.pk}/")
    marker = mark_window(browser)
    wait_text(browser, "#run-status", "running")
    wait_text(browser, f"{node('hold')} .node-status", "running")
    assert text(browser, f"{node('slow')} .node-status") == "pending"  # not started yet
    shot("run-held")

    gate.open()
    seen: list[str] = []

    def finished() -> bool:
        # Both read in one step of the page's script: the live part swapped between two reads
        # would pair a node status from before the swap with the run's end from after it.
        status, run_status = browser.execute_script(
            "const n = document.querySelector(arguments[0]), r = document.querySelector('#run-status');"
            "return [n ? n.textContent.trim() : null, r ? r.textContent.trim() : null];",
            f"{node('slow')} .node-status",
        )
        if status and status != "pending" and (not seen or seen[-1] != status):
            seen.append(status)
        return run_status == "completed"

    try:
        wait_for(finished, interval=0.1, what="the run to end on its page")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the slow node read {seen}, the run {text(browser, '#run-status')!r}") from None
    assert "running" in seen and seen[-1] == "succeeded", seen
    assert texts(browser, "li.node .node-status") == ["succeeded", "succeeded", "succeeded"]
    assert text(browser, "#run-duration")
    assert window_kept(browser, marker), "the run page was reloaded"
    shot("run-completed")
    run.refresh_from_db()
    assert run.status == "completed"


# What the page says of a node that never started in a run that has ended (or nothing at all).
NEVER_STARTED = (None, "not reached", "skipped")


def cancel_on_the_page(browser, shot, run: PipelineRun, *, stop_node: bool) -> None:
    """Cancel ``run`` from its page through the confirmation page, ticking "stop the running
    node" when ``stop_node``; returns on the run page it leads back to."""
    go(browser, f"/runs/{run.pk}/")
    wait_text(browser, f"{node('hold')} .node-status", "running")
    shot("run-running")
    click(browser, "a#cancel")
    wait_path(browser, f"/runs/{run.pk}/cancel/")
    checkbox = browser.find_element(By.CSS_SELECTOR, "input[name=stop_node]")
    assert not checkbox.is_selected()  # stopping the node is asked for, never the default
    if stop_node:
        checkbox.click()
    shot("confirm")
    click(browser, "button#confirm")
    wait_path(browser, f"/runs/{run.pk}/")
    assert texts(browser, "ul.messages > li"), "no message after the cancel"
    shot("cancel-requested")


def test_a_cancel_that_lets_the_node_finish_ends_the_run_after_it(browser, shot, operator, cli, worker, gate):
    held_definition(gate)
    run = launch(cli, "held")
    wait_for(gate.reached, what="the run to reach its gate")
    login(browser, operator)
    cancel_on_the_page(browser, shot, run, stop_node=False)
    marker = mark_window(browser)

    run.refresh_from_db()
    assert run.cancel_requested_at is not None and not run.cancel_stop_node
    # The node is not interrupted: it still runs, held at the gate.
    assert run.status == "running" and text(browser, f"{node('hold')} .node-status") == "running"

    gate.open()
    wait_text(browser, "#run-status", "cancelled")
    assert text(browser, f"{node('hold')} .node-status") == "succeeded"
    assert text(browser, f"{node('after')} .node-status") in NEVER_STARTED  # never started
    assert window_kept(browser, marker)
    shot("cancelled")
    assert not StageExecution.objects.filter(run=run, node_id="after").exists()
    assert PipelineRun.objects.get(pk=run.pk).status == "cancelled"


def _cancel_stops_nodes() -> bool:
    from apps.orchestration.run_actions import pipeline_run_cancel

    return "stop_node" in inspect.signature(pipeline_run_cancel).parameters


@pytest.mark.skipif(not _cancel_stops_nodes(), reason="pipeline_run_cancel(stop_node=True) has not landed yet")
def test_a_cancel_that_stops_the_running_node_ends_the_run_at_once(browser, shot, operator, cli, worker, gate):
    held_definition(gate)
    run = launch(cli, "held")
    wait_for(gate.reached, what="the run to reach its gate")
    login(browser, operator)
    cancel_on_the_page(browser, shot, run, stop_node=True)

    # The gate stays closed: only an interrupted node ends the run.
    wait_text(browser, "#run-status", "cancelled", timeout=STOP_DEADLINE)
    wait_text(browser, f"{node('hold')} .node-status", "interrupted")
    assert text(browser, f"{node('after')} .node-status") in NEVER_STARTED
    shot("cancelled")
    run.refresh_from_db()
    assert (run.status, run.cancel_stop_node) == ("cancelled", True)
    assert not StageExecution.objects.filter(run=run, node_id="after").exists()


FLAKY = [
    {"id": "announce", "type": "notify", "config": {"driver": "webhook", "url_env": "HOOK_A_URL"}, "next": "check"},
    {"id": "check", "type": "notify", "config": {"driver": "webhook", "url_env": "HOOK_B_URL"}, "next": "report"},
    {"id": "report", "type": "transform", "config": {"mapping": {"announced": "announce.succeeded"}}},
]


def test_a_retry_from_the_failed_node_reuses_the_nodes_before_it(browser, shot, operator, cli, worker, hooks):
    a, b = hooks
    for server in hooks:
        server.requests.clear()
        server.queued.clear()
    b.queue_json({"error": "down"}, status=500)
    definition("flaky", FLAKY)
    failed = launch(cli, "flaky", "--wait")
    assert failed.status == "failed", failed.error

    login(browser, operator)
    go(browser, f"/runs/{failed.pk}/")
    wait_text(browser, "#run-status", "failed")
    assert text(browser, "#run-error") == "Node 'check' failed: Notification failed (webhook: HTTP 500)"
    assert text(browser, f"{node('check')} .node-status") == "failed"
    shot("failed")
    click(browser, "a#retry-failed")
    wait_path(browser, rf"/runs/{failed.pk}/retry/\?from_failed=1")
    shot("confirm")
    click(browser, "button#confirm")
    retry_id = int(wait_path(browser, r"/runs/(\d+)/")[1])
    assert retry_id != failed.pk
    wait_text(browser, "#run-status", "completed")
    assert text(browser, f"{node('announce')} .node-status") == "reused"
    assert text(browser, f"{node('check')} .node-status") == "succeeded"
    assert browser.find_element(By.CSS_SELECTOR, "a#retry-of").get_attribute("href").endswith(f"/runs/{failed.pk}/")
    shot("retried")

    # The first node's webhook was called once in all; the failed one again, and answered.
    assert (len(a.requests), len(b.requests)) == (1, 2)
    retry = PipelineRun.objects.get(pk=retry_id)
    assert (retry.trigger, retry.retry_of_id, retry.status) == ("retry", failed.pk, "completed")
    go(browser, f"/runs/{failed.pk}/")
    assert browser.find_element(By.CSS_SELECTOR, "a#retried-as").get_attribute("href").endswith(f"/runs/{retry_id}/")
    shot("original")


def test_a_definition_is_run_from_its_page_with_a_typed_payload(browser, shot, operator, worker, health_check):
    login(browser, operator)
    go(browser, "/definitions/")
    shot("definitions")
    click(browser, 'tr.definition[data-name="health-check"] a.definition-link')
    wait_path(browser, "/definitions/health-check/")
    assert "metrics" in (text(browser, "pre#dry-run") or "")
    shot("definition")

    # A payload that is not JSON: said so on the page, with what was typed kept, and nothing launched.
    payload = browser.find_element(By.CSS_SELECTOR, "form#run-form textarea[name=payload]")
    payload.clear()
    payload.send_keys('{"service":')
    click(browser, "button#run-now")
    wait_path(browser, "/definitions/health-check/run/")
    assert any("Invalid JSON in payload" in message for message in texts(browser, "ul.messages > li")), texts(
        browser, "ul.messages > li")
    assert browser.find_element(By.CSS_SELECTOR, "textarea[name=payload]").get_attribute("value") == '{"service":'
    assert not PipelineRun.objects.exists()
    shot("bad-payload")

    payload = browser.find_element(By.CSS_SELECTOR, "form#run-form textarea[name=payload]")
    payload.clear()
    payload.send_keys('{"service": "web"}')
    click(browser, "button#run-now")
    run_id = int(wait_path(browser, r"/runs/(\d+)/")[1])
    marker = mark_window(browser)
    wait_text(browser, "#run-status", "completed")
    assert texts(browser, "li.node .node-status") == ["succeeded", "succeeded", "succeeded"]
    run = PipelineRun.objects.get(pk=run_id)
    assert (run.status, run.trigger, run.payload) == ("completed", "console", {"service": "web"})
    # Its logs, as show_run --logs has them, arrive on the same page without a reload.
    kept = [line.message for line in RunLogLine.objects.filter(run_id=run_id).order_by("seq")]
    assert kept, "the run kept no log line"
    wait_for(lambda: len(texts(browser, "section#logs div.log-line")) == len(kept), what="the run's log lines")
    shown = texts(browser, "section#logs div.log-line")
    assert all(message.splitlines()[0] in line for message, line in zip(kept, shown, strict=True)), (kept, shown)
    assert window_kept(browser, marker), "the run page was reloaded"
    shot("run")


def scheduled_definition(name: str) -> PipelineDefinition:
    from apps.orchestration.schedules import schedule_sync

    made = definition(name, TINY_NODES, schedule={"cron": "0 3 * * *"})
    schedule_sync(definition=made)
    return made


def test_a_schedule_is_paused_and_resumed_from_the_schedules_page(browser, shot, operator):
    from django_celery_beat.models import PeriodicTask

    from apps.orchestration.schedules import task_name

    scheduled_definition("nightly")
    login(browser, operator)
    go(browser, "/schedules/")
    schedule = 'tr.schedule[data-definition="nightly"]'
    assert text(browser, f"{schedule} td.schedule-state") == "active"
    assert text(browser, f"{schedule} td.next-due")
    shot("active")

    click(browser, f"{schedule} button.pause")
    wait_path(browser, r"/schedules/")
    wait_text(browser, f"{schedule} td.schedule-state", "paused")
    shot("paused")
    assert PipelineDefinition.objects.get(name="nightly").schedule_paused
    assert not PeriodicTask.objects.get(name=task_name("nightly")).enabled

    click(browser, f"{schedule} button.resume")
    wait_path(browser, r"/schedules/")
    wait_text(browser, f"{schedule} td.schedule-state", "active")
    shot("resumed")
    assert PeriodicTask.objects.get(name=task_name("nightly")).enabled


# Each would set window.__xss if it ever ran as markup or script on a console page.
HOSTILE_TRACE_ID = "<script>window.__xss='trace'</script>"
HOSTILE = {
    "script": "<script>window.__xss='payload'</script>",
    "img": "<img src=x onerror=window.__xss='img'>",
    "link": "<a id=evil href=javascript:window.__xss='link'>click me</a>",
    "url": "javascript:window.__xss='url'",
}
# Paths a node looks for and does not find, named in the run's error: markup, and a value that
# would end an HTML attribute and add one if it were not escaped there.
HOSTILE_PATH = "payload.<img src=x onerror=window.__xss='error'>"
ATTRIBUTE_PATH = "payload.x\" onmouseover=\"window.__xss='attribute'\" data-x=\""
# What a page must not contain however it renders those values: elements that are not the
# console's own.
INJECTED = (
    "script:not([src])", "img[src='x']", "img[onerror]", "a#evil", "a[href^='javascript:']",
    "[onerror]", "[onload]", "[onmouseover]",
)


def injected_elements(browser) -> dict:
    return {
        selector: count
        for selector in INJECTED
        if (count := browser.execute_script("return document.querySelectorAll(arguments[0]).length;", selector))
    }


def test_hostile_trace_ids_payloads_outputs_and_errors_are_shown_as_text(browser, shot, operator, cli, worker, console):
    definition("echo", [
        {"id": "echo", "type": "transform", "config": {"mapping": {key: f"payload.{key}" for key in HOSTILE}},
         "next": "fail"},
        # Fails naming the paths it did not find: the run's error carries them, into the
        # list's one-line error and its title attribute.
        {"id": "fail", "type": "transform", "config": {"mapping": {"a": HOSTILE_PATH, "b": ATTRIBUTE_PATH}}},
    ])
    run = launch(cli, "echo", "--payload", json.dumps(HOSTILE), "--trace-id", HOSTILE_TRACE_ID, "--wait")
    assert run.result["node_results"]["echo"]["output"] == HOSTILE
    error = f"Node 'fail' failed: Path not found: {HOSTILE_PATH}, {ATTRIBUTE_PATH}"
    assert (run.status, run.error) == ("failed", error)

    login(browser, operator)
    go(browser, "/runs/")
    assert browser.find_elements(By.CSS_SELECTOR, row(run.pk))
    assert text(browser, f"{row(run.pk)} td.error") == error
    assert browser.find_element(By.CSS_SELECTOR, f"{row(run.pk)} td.error").get_attribute("title") == error
    assert injected_elements(browser) == {}
    assert browser.execute_script("return window.__xss === undefined;")
    shot("list")

    go(browser, f"/runs/{run.pk}/")
    # Every collapsed part opened, as a reader would, before looking.
    browser.execute_script("document.querySelectorAll('details').forEach(d => { d.open = true; });")
    assert text(browser, "#run-trace-id") == HOSTILE_TRACE_ID
    assert text(browser, "#run-error") == error
    payload = text(browser, "details#payload") or ""
    output = text(browser, f"{node('echo')} .node-output") or ""
    for value in HOSTILE.values():
        # Shown as the characters it is (JSON may escape quotes, never angle brackets).
        assert value in payload.replace('\\"', '"'), (value, payload)
        assert value in output.replace('\\"', '"'), (value, output)
    assert injected_elements(browser) == {}
    assert browser.execute_script("return window.__xss === undefined;")
    shot("run")

    go(browser, f"/runs/?q={quote(HOSTILE_TRACE_ID)}")
    assert browser.execute_script(
        "return Array.from(document.querySelectorAll('tr.run'), r => r.dataset.runId);"
    ) == [str(run.pk)]
    assert injected_elements(browser) == {}
    assert browser.execute_script("return window.__xss === undefined;")
    shot("search")

    # And should markup ever slip through, the page's policy forbids inline script.
    for path in ("/runs/", f"/runs/{run.pk}/"):
        policy = header(console, path, browser.get_cookie("sessionid")["value"], "Content-Security-Policy")
        assert policy is not None, f"no Content-Security-Policy on {path}"
        script_src = next((d.split() for d in policy.split(";") if d.split()[:1] == ["script-src"]), None)
        default_src = next((d.split() for d in policy.split(";") if d.split()[:1] == ["default-src"]), None)
        sources = script_src or default_src
        assert sources is not None and "'self'" in sources, policy
        assert not {"'unsafe-inline'", "'unsafe-eval'", "*", "data:"} & set(sources), policy


def header(console, path: str, session: str, name: str) -> str | None:
    """The ``name`` header of the console's answer to GET ``path`` with the session cookie."""
    connection = http.client.HTTPConnection("127.0.0.1", console.port, timeout=PROCESS_TIMEOUT)
    try:
        connection.request("GET", path, headers={"Cookie": f"sessionid={session}"})
        response = connection.getresponse()
        response.read()
        assert response.status == 200, (path, response.status)
        return response.getheader(name)
    finally:
        connection.close()


ACTION_CONTROLS = "a#cancel, a#retry, a#retry-failed, button#confirm, button.pause, button.resume, button.run-now, form#run-form, button#run-now"


def test_a_view_only_user_sees_no_buttons_and_the_actions_refuse_them(browser, shot, viewer, operator, cli, worker, gate):
    held_definition(gate)
    scheduled_definition("nightly")
    running = launch(cli, "held")
    wait_for(gate.reached, what="the run to reach its gate")

    login(browser, viewer)
    for name, path in (("runs", "/runs/"), ("run", f"/runs/{running.pk}/"), ("schedules", "/schedules/"),
                       ("definitions", "/definitions/"), ("definition", "/definitions/held/")):
        go(browser, path)
        assert path_of(browser) == path
        assert browser.find_elements(By.CSS_SELECTOR, ACTION_CONTROLS) == [], f"action controls on {path}"
        # The only form a viewer gets is the logout one.
        assert browser.execute_script("return Array.from(document.forms, f => f.id).filter(i => i !== 'logout' && i !== 'filters');") == []
        shot(name)

    # The operator's pages name the action URLs (the schedule's and the definition's forms);
    # a viewer posting to them, with a valid CSRF token, is refused and nothing changes.
    login(browser, operator)
    go(browser, "/schedules/")
    pause = browser.find_element(By.CSS_SELECTOR, 'tr.schedule[data-definition="nightly"] button.pause')
    pause_url = path_from(pause.find_element(By.XPATH, "./ancestor::form").get_attribute("action"))
    go(browser, "/definitions/held/")
    run_url = path_from(browser.find_element(By.CSS_SELECTOR, "form#run-form").get_attribute("action"))

    client = Client(enforce_csrf_checks=True)
    client.force_login(viewer)
    page = client.get(f"/runs/{running.pk}/")
    assert page.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert token, "no CSRF token on the run page (the logout form has one)"
    runs_before = PipelineRun.objects.count()
    for url, data in (
        (f"/runs/{running.pk}/cancel/", {"stop_node": "on"}),
        (f"/runs/{running.pk}/retry/", {}),
        (f"/runs/{running.pk}/retry/?from_failed=1", {}),
        (pause_url, {}),
        (run_url, {"payload": "{}"}),
    ):
        refused = client.post(url, {"csrfmiddlewaretoken": token[1], **data})
        assert refused.status_code == 403, (url, refused.status_code)
        assert b"CSRF" not in refused.content, f"{url}: refused for its CSRF token, not for the user"
    running.refresh_from_db()
    assert running.cancel_requested_at is None and running.status == "running"
    assert PipelineRun.objects.count() == runs_before
    assert not PipelineDefinition.objects.get(name="nightly").schedule_paused

    # The same request from the operator is carried out (the URLs are the real ones).
    client.force_login(operator)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get(f"/runs/{running.pk}/").content.decode())
    done = client.post(pause_url, {"csrfmiddlewaretoken": token[1]})
    assert done.status_code == 302, done.status_code
    assert PipelineDefinition.objects.get(name="nightly").schedule_paused


def path_from(url: str) -> str:
    """The path and query of a form's resolved ``action`` URL."""
    return re.sub(r"^https?://[^/]+", "", url)
