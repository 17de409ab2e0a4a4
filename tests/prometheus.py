"""A real Prometheus server and promtool (Debian package ``prometheus``) for the tests of /metrics.

`tool(name)` finds a binary: the test is skipped with a message where it is missing, and fails
instead under REQUIRE_SERVICES=1 (CI, whose .ci/run installs the package).

`start_prometheus(target, key)` runs the server with a generated configuration: one job
scraping ``target`` (host:port) every second at /metrics with `authorization.credentials`
``key`` (type Bearer), as docs/operating.md tells operators to set it up. It listens on a free
port of 127.0.0.1 only, keeps its data in a temporary folder, and is ready once `/-/ready`
answers (bounded wait). `Prometheus.stop()` ends the process by its pid.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import PROCESS_TIMEOUT, free_port, wait_for

STOP_TIMEOUT = 15  # seconds after SIGTERM before SIGKILL


def tool(name: str) -> str:
    """The path of the Debian package's ``name`` (prometheus, promtool); skips the test
    where it is missing (fails it when REQUIRE_SERVICES=1)."""
    import pytest

    found = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if found:
        return found
    message = (f"{name} is not installed (Debian package prometheus; "
               "`apt-get install --no-install-recommends prometheus`, as .ci/run does)")
    if os.environ.get("REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def config_text(*, target: str, key: str) -> str:
    """The server's configuration (JSON is valid YAML): one job scraping ``target`` every second."""
    return json.dumps({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1m"},
        "scrape_configs": [{
            "job_name": "pipelines",
            "static_configs": [{"targets": [target]}],
            "authorization": {"type": "Bearer", "credentials": key},
        }],
    }, indent=1)


@dataclass
class Prometheus:
    port: int
    process: subprocess.Popen
    folder: str
    log: Path = field(init=False)

    def __post_init__(self):
        self.log = Path(self.folder) / "prometheus.log"

    def api(self, path: str, **query) -> dict:
        """GET the HTTP API's ``path`` with ``query``; its JSON answer."""
        url = f"http://127.0.0.1:{self.port}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_prometheus(*, target: str, key: str) -> Prometheus:
    """A Prometheus server scraping ``target`` with ``key``, once it is ready."""
    binary = tool("prometheus")
    folder = tempfile.mkdtemp(prefix="prometheus-")
    config = Path(folder) / "prometheus.yml"
    config.write_text(config_text(target=target, key=key))
    config.chmod(0o600)  # it holds the key
    port = free_port()
    log = (Path(folder) / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={folder}/data",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=log,
    )
    log.close()
    server = Prometheus(port, process, folder)

    def ready() -> bool:
        assert process.poll() is None, f"prometheus exited: {server.log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(ready, timeout=PROCESS_TIMEOUT, what="prometheus to be ready", interval=0.2)
    except BaseException:
        server.stop()
        raise
    return server
