"""A real Prometheus Alertmanager on 127.0.0.1 for tests of the alert receiver.

`start_alertmanager(receiver_url, key)` runs the Debian package's binary with a
generated configuration: one route to one receiver whose `webhook_configs`
entry posts to ``receiver_url`` with `http_config.authorization` (type Bearer,
credentials ``key``), as the README tells operators to set it up, and short
group_wait / group_interval so a test sees a notification within seconds. Its
web port is a free port of 127.0.0.1, clustering is off
(`--cluster.listen-address=` empty) and its storage is a temporary folder.
It waits (bounded) until `/-/ready` answers, and `Alertmanager.stop()` ends the
process by its pid; the `alertmanager` fixture in tests/conftest.py does that
in its teardown even when the test fails.

Alerts go in through Alertmanager's own API (`POST /api/v2/alerts`): firing
with no `endsAt`, resolved with an `endsAt` in the past.

Where the binary is missing the test is skipped with a message, unless
REQUIRE_SERVICES=1 (CI, whose .ci/run installs it): then it fails.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import PROCESS_TIMEOUT, free_port

BINARY = "prometheus-alertmanager"
READY_TIMEOUT = 60  # seconds for /-/ready to answer 200 after the start
STOP_TIMEOUT = 15  # seconds after SIGTERM before SIGKILL
RECEIVER = "pipelines"
# Short enough for a test to see the first notification within seconds and a resolved one
# soon after; repeat_interval long enough that a repeat is never mistaken for a new one.
GROUP_WAIT, GROUP_INTERVAL, REPEAT_INTERVAL = "1s", "2s", "1h"


def binary() -> str:
    """The Alertmanager binary's path. Skips the test when it is missing (fails it when
    REQUIRE_SERVICES=1)."""
    import pytest

    found = shutil.which(BINARY) or next(
        (path for path in (f"/usr/bin/{BINARY}", f"/usr/sbin/{BINARY}") if os.access(path, os.X_OK)), None)
    if found:
        return found
    message = (f"{BINARY} is not installed (Debian package prometheus-alertmanager; "
               "`apt-get install --no-install-recommends prometheus-alertmanager`, as .ci/run does)")
    if os.environ.get("REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def config_text(*, receiver_url: str, key: str, group_by: list[str], repeat_interval: str = REPEAT_INTERVAL) -> str:
    """Alertmanager's configuration (JSON is valid YAML): every alert to one webhook receiver
    that posts to ``receiver_url`` with `Authorization: Bearer <key>`, resolved notices too;
    a firing group is sent again every ``repeat_interval``."""
    config = {
        "route": {
            "receiver": RECEIVER, "group_by": group_by,
            "group_wait": GROUP_WAIT, "group_interval": GROUP_INTERVAL, "repeat_interval": repeat_interval,
        },
        "receivers": [{
            "name": RECEIVER,
            "webhook_configs": [{
                "url": receiver_url,
                "send_resolved": True,
                "http_config": {"authorization": {"type": "Bearer", "credentials": key}},
            }],
        }],
    }
    return json.dumps(config, indent=1)


@dataclass
class Alertmanager:
    """A running Alertmanager process: its API's base URL, its folder (config, storage, log)."""

    proc: subprocess.Popen
    url: str
    folder: Path
    _log: object = field(repr=False, default=None)

    def post_alerts(self, alerts: list[dict]) -> None:
        """Send ``alerts`` to Alertmanager's API (`POST /api/v2/alerts`), each as
        ``{"labels": {...}, "annotations": {...}, "startsAt": ..., "endsAt": ...}``
        (see `alert`). Raises AssertionError unless it answers 200."""
        request = urllib.request.Request(
            f"{self.url}/api/v2/alerts", data=json.dumps(alerts).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                status, body = answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        assert status == 200, f"Alertmanager refused the alerts: HTTP {status} {body[:500]!r}"

    def alerts(self) -> list[dict]:
        """The alerts Alertmanager holds (`GET /api/v2/alerts`)."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=30) as answer:
            return json.loads(answer.read())

    def log(self) -> str:
        return (self.folder / "alertmanager.log").read_text(errors="replace")

    def stop(self) -> None:
        """End the process by its pid (SIGTERM, SIGKILL after STOP_TIMEOUT) and remove its folder."""
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(STOP_TIMEOUT)
        finally:
            if self._log is not None:
                self._log.close()
            shutil.rmtree(self.folder, ignore_errors=True)


def alert(name: str, *, labels: dict | None = None, annotations: dict | None = None,
          resolved: bool = False) -> dict:
    """One alert for `post_alerts`: labels ``alertname=name`` plus ``labels``; firing (no end)
    or, with ``resolved``, ended a second ago."""
    now = datetime.datetime.now(datetime.UTC)
    item = {
        "labels": {"alertname": name, **(labels or {})},
        "annotations": annotations or {},
        "startsAt": (now - datetime.timedelta(minutes=5)).isoformat(),
        "generatorURL": "http://127.0.0.1/graph",
    }
    if resolved:
        item["endsAt"] = (now - datetime.timedelta(seconds=1)).isoformat()
    return item


def start_alertmanager(*, receiver_url: str, key: str, group_by: list[str] | None = None,
                       repeat_interval: str = REPEAT_INTERVAL) -> Alertmanager:
    """Start Alertmanager on a free port of 127.0.0.1, its receiver posting to ``receiver_url``
    with ``key`` as Bearer credentials, alerts grouped by ``group_by`` (default: alertname),
    a firing group sent again every ``repeat_interval`` (default: an hour, so never in a test);
    return once `/-/ready` answers 200. Raises AssertionError (after stopping it) when it exits
    or is not ready within READY_TIMEOUT seconds; skips when the binary is missing (see `binary`)."""
    executable = binary()
    folder = Path(tempfile.mkdtemp(prefix="am"))
    config = folder / "alertmanager.yml"
    config.write_text(config_text(receiver_url=receiver_url, key=key, group_by=group_by or ["alertname"],
                                  repeat_interval=repeat_interval))
    config.chmod(0o600)  # it holds the key
    port = free_port()
    log = open(folder / "alertmanager.log", "wb")  # closed by Alertmanager.stop
    proc = subprocess.Popen(
        [executable, f"--config.file={config}", f"--storage.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=info"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )
    manager = Alertmanager(proc=proc, url=f"http://127.0.0.1:{port}", folder=folder, _log=log)
    ready = False
    try:
        _wait_ready(manager)
        ready = True
    finally:
        if not ready:  # an interrupt included: no Alertmanager outlives the test
            manager.stop()
    return manager


def _wait_ready(manager: Alertmanager) -> None:
    """Return once `/-/ready` answers 200; AssertionError, with the end of its log, when the
    process exits or READY_TIMEOUT passes first."""
    deadline = time.monotonic() + min(READY_TIMEOUT, PROCESS_TIMEOUT)
    while True:
        if manager.proc.poll() is not None:
            raise AssertionError(f"Alertmanager exited ({manager.proc.returncode}); its log:\n{manager.log()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{manager.url}/-/ready", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass  # not listening yet, or not ready (503)
        if time.monotonic() >= deadline:
            raise AssertionError(f"Alertmanager not ready after {READY_TIMEOUT}s; its log:\n{manager.log()[-3000:]}")
        time.sleep(0.1)
