"""The console in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium, talking to the real web service (gunicorn)
on 127.0.0.1, with a real worker executing the runs on the module's broker.

One browser, one web server and one worker per module (each costs seconds to
start); every test starts logged out. Without chromium or chromedriver the
browser tests are skipped with a message, unless REQUIRE_SERVICES=1 (CI), where
they fail. Screenshots of the pages the tests visit are saved under the test
run's temporary directory, in ``screenshots/<test>-<name>.png``.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.support import PROCESS_TIMEOUT, manage_py, wait_for
from tests.workers import conftest as workers
from tests.workers.conftest import TEST_BROKERS, BrokerNamespace, WebServer

# The worker tests' fixtures, for this directory's tests (by name): the module's worker and the
# environment its processes share, manage.py in a child process, the gate that holds a node.
base_env = workers.base_env
worker = workers.worker
cli = workers.cli
module_gate = workers.module_gate

CHROMEDRIVER = "/usr/bin/chromedriver"
PASSWORD = "console-tests-password"  # the test users' password, in a test database only
VIEW = "view_pipelinerun"
OPERATE = "operate_pipelines"


@pytest.fixture(scope="module")
def broker(request, django_db_setup, django_db_blocker):
    """The first broker of TEST_BROKERS only (the embedded one with SQLite, Redis with
    PostgreSQL in scripts/test.sh): the console's pages do not differ between brokers,
    and a browser module on each would only make the suite longer."""
    namespace = BrokerNamespace(TEST_BROKERS[0])
    try:
        yield namespace
    finally:
        namespace.close()


def browser_binaries() -> tuple[str, str]:
    """The paths of chromium and chromedriver; skips the test where either is missing (fails it
    when REQUIRE_SERVICES=1, as in CI, whose .ci/run installs both)."""
    chromium = shutil.which("chromium")
    missing = [name for name, path in (("chromium", chromium), ("chromedriver", CHROMEDRIVER))
               if not (path and os.access(path, os.X_OK))]
    if missing:
        message = (f"{' and '.join(missing)} not installed: the console's browser tests need Debian's "
                   "chromium and chromium-driver packages (.ci/run installs them)")
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    assert chromium is not None
    return chromium, CHROMEDRIVER


@pytest.fixture(scope="module")
def console(base_env, tmp_path_factory):
    """The real web service (gunicorn, threaded) on a free port of 127.0.0.1, on the module's
    database and broker, with its static files (htmx, styles) collected as a deployment does;
    ``console.url(path)`` is a page's address."""
    static_root = tmp_path_factory.mktemp("static")
    env = {**base_env, "STATIC_ROOT": str(static_root)}
    collected = manage_py("collectstatic", "--noinput", env=env, timeout=PROCESS_TIMEOUT)
    assert collected.exit_code == 0, collected.stderr
    server = WebServer(env)
    server.url = lambda path="/": f"http://127.0.0.1:{server.port}{path}"
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def chromium() -> tuple[str, str]:
    """The paths of chromium and chromedriver (browser_binaries), found before anything else of
    the module is started: without them it is skipped (or fails, in CI) at once."""
    return browser_binaries()


@pytest.fixture(scope="module")
def browser(chromium, console, tmp_path_factory):
    """A headless Chromium (1400x1000) on the console, shared by the module's tests.

    Selenium is given the system chromedriver and chromium, so Selenium Manager never runs
    (and SE_OFFLINE forbids it any download should it be asked); Chromium's own background
    traffic (updates, sync, metrics) is switched off: no packet leaves the machine."""
    chromium_path, chromedriver = chromium
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium_path
    for argument in (
        "--headless=new", "--window-size=1400,1000", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
        "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
        "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--metrics-recording-only",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(argument)
    service = Service(executable_path=chromedriver, log_output=str(tmp_path_factory.mktemp("chromedriver") / "log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(PROCESS_TIMEOUT)
    driver.console = console
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def shot(browser, request, tmp_path_factory):
    """``shot(name)`` saves a screenshot of the browser's page as
    ``<the run's temporary directory>/screenshots/<test>-<name>.png`` and returns its path."""
    folder = tmp_path_factory.getbasetemp() / "screenshots"
    folder.mkdir(exist_ok=True)
    test = safe(request.node.name)

    def _shot(name: str) -> Path:
        path = folder / f"{test}-{safe(name)}.png"
        assert browser.save_screenshot(str(path)), f"no screenshot saved at {path}"
        return path

    yield _shot
    report = getattr(request.node, "call_report", None)
    if report is not None and report.failed:
        _shot("failed")  # the page as it was when the test failed


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each test's report of its call on the test, for ``shot`` to see whether it failed."""
    report = yield
    if report.when == "call":
        item.call_report = report
    return report


def safe(name: str) -> str:
    """``name`` as a file name: runs of other characters than letters, digits, ``.-_`` become ``_``."""
    return re.sub(r"[^\w.-]+", "_", name).strip("_")


def user_create(username: str, *codenames: str):
    """A user with ``PASSWORD`` and the orchestration permissions ``codenames``."""
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user(username=username, password=PASSWORD)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="orchestration", codename__in=codenames))
    return user


@pytest.fixture
def operator(transactional_db):
    """A user who may look and act: view_pipelinerun and operate_pipelines."""
    return user_create("operator", VIEW, OPERATE)


@pytest.fixture
def viewer(transactional_db):
    """A user who may only look: view_pipelinerun."""
    return user_create("viewer", VIEW)


def go(browser, path: str) -> None:
    """Open the console's page ``path``."""
    browser.get(browser.console.url(path))


def path_of(browser) -> str:
    """The path (and query) of the page the browser shows."""
    return re.sub(r"^https?://[^/]+", "", browser.current_url)


def login(browser, user) -> None:
    """Log ``user`` in through the login page, as a person would, starting logged out;
    returns once the console has answered with a page other than the login page."""
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    go(browser, "/login/")
    browser.find_element(By.NAME, "username").send_keys(user.username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(lambda: not path_of(browser).startswith("/login/") and ready(browser),
             what=f"the console to let {user.username} in (at {browser.current_url})", interval=0.2)


def ready(browser) -> bool:
    return browser.execute_script("return document.readyState") == "complete"


def text(browser, selector: str) -> str | None:
    """The text of the first element matching ``selector`` (None when there is none), read in
    one step of the page's own script: a part the page swaps in and out meanwhile is never
    half read."""
    return browser.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : null;", selector
    )


def texts(browser, selector: str) -> list[str]:
    """The texts of every element matching ``selector``."""
    return browser.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.textContent.trim());", selector
    )


def wait_text(browser, selector: str, expected: str, timeout: float = PROCESS_TIMEOUT) -> str:
    """Wait for the element ``selector`` to read ``expected`` (its whole trimmed text, or a
    word of it); AssertionError naming what the page said instead."""
    def matches():
        found = text(browser, selector)
        return found is not None and (found == expected or expected in found.split())

    try:
        wait_for(matches, timeout=timeout, interval=0.1, what=f"{selector} to read {expected!r}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; it reads {text(browser, selector)!r} at {browser.current_url}") from None
    return text(browser, selector) or ""


def mark_window(browser) -> str:
    """Set a marker on the page's window object: it survives only as long as the page is not
    reloaded or left (``window_kept``)."""
    marker = f"kept-{time.monotonic_ns()}"
    browser.execute_script("window.__consoleTestMarker = arguments[0];", marker)
    return marker


def window_kept(browser, marker: str) -> bool:
    return browser.execute_script("return window.__consoleTestMarker || null;") == marker
