"""The API behind a real gunicorn on 127.0.0.1: chunked bodies are read (and bounded), a
declared length over the limit is refused, /healthz answers."""
from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys

import pytest

from tests.support import ROOT, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served(subprocess_env, tmp_path):
    """gunicorn serving the API (with the test echo routes), API_MAX_BODY_BYTES=1000."""
    port = free_port()
    log = tmp_path / "gunicorn.log"
    log_file = log.open("wb")
    env = {**subprocess_env, "API_MAX_BODY_BYTES": "1000", "API_RATE_LIMIT": "off", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--no-control-socket",
         "--graceful-timeout", "5", "tests.api.echo_wsgi:application"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log_file,
    )

    def up():
        try:
            return request(port, "GET", "/healthz")[0] == 200
        except OSError:
            assert proc.poll() is None, log.read_text()
            return False

    try:
        wait_for(up, what="gunicorn to answer /healthz")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log_file.close()


def request(port: int, method: str, path: str, body=None, headers: dict | None = None, chunked: bool = False):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


def chunks(data: bytes, size: int = 100):
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_served_health_and_auth(served):
    status, content_type, body = request(served, "GET", "/healthz")
    assert (status, content_type, json.loads(body)) == (200, "application/json", {"status": "ok"})
    status, _, body = request(served, "GET", "/api/v1/definitions")
    assert status == 401 and json.loads(body) == {"error": "An API key is required: send Authorization: Bearer <key>"}


def test_served_chunked_bodies_are_read_and_bounded(served):
    from apps.api.keys import api_key_create

    key = api_key_create(name="writer", scopes=["runs:write"])[1]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    small = json.dumps({"value": "x" * 500}).encode()
    status, _, body = request(served, "POST", "/api/echo/parsed", chunks(small), headers, chunked=True)
    assert status == 200 and json.loads(body) == {"value": "x" * 500}
    large = json.dumps({"value": "x" * 5000}).encode()
    status, content_type, body = request(served, "POST", "/api/echo/parsed", chunks(large), headers, chunked=True)
    assert (status, content_type) == (413, "application/json")
    assert json.loads(body) == {"error": "The request body is larger than 1000 bytes (API_MAX_BODY_BYTES)"}
    status, _, body = request(served, "POST", "/api/echo/parsed", large, headers)
    assert status == 413 and json.loads(body)["error"].startswith("The request body is larger than 1000 bytes")
