"""A real HTTP server on 127.0.0.1 for tests of code that calls other services.

It records every request and answers with what the test set: a status, a
JSON or raw body, extra headers, or no answer until the test ends (to
trigger timeouts, or to hold a node of a run until the test releases it).
It can listen on another loopback address, on a given
port, and speak TLS.
"""
from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class RecordingServer:
    host: str = "127.0.0.1"
    port: int = 0
    scheme: str = "http"
    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    headers: dict = field(default_factory=dict)  # sent with every answer (Content-Encoding, Location...)
    slow: bool = False  # hold each request until `release` is set, at most `hold_seconds`
    hold_seconds: float = 10
    requests: list = field(default_factory=list)
    queued: list = field(default_factory=list)  # (status, body, content_type) for the next requests
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str = "/") -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def answer_json(self, data, status: int = 200) -> None:
        self.status, self.body, self.content_type = status, json.dumps(data).encode(), "application/json"

    def answer_raw(self, body: bytes, status: int = 200, content_type: str = "text/plain") -> None:
        self.status, self.body, self.content_type = status, body, content_type

    def queue_json(self, data, status: int = 200) -> None:
        """Answer the next unanswered request with ``data`` (then fall back to the default)."""
        self.queued.append((status, json.dumps(data).encode(), "application/json"))

    def queue_raw(self, body: bytes, status: int = 200, content_type: str = "text/plain") -> None:
        self.queued.append((status, body, content_type))

    @property
    def last(self) -> dict:
        return self.requests[-1]


def start_server(host: str = "127.0.0.1", port: int = 0, ssl_context=None) -> tuple[RecordingServer, callable]:
    """Start a server on ``host``:``port`` (any free port for 0), speaking TLS
    with ``ssl_context`` when given; returns its state and a function that
    stops it. Raises OSError when the port is taken."""
    state = RecordingServer(host=host, scheme="https" if ssl_context else "http")

    class Handler(BaseHTTPRequestHandler):
        def _handle(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = None
            state.requests.append({
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": raw,
                "json": parsed,
            })
            if state.slow:
                state.release.wait(timeout=state.hold_seconds)  # until released: the client times out first
            status, body, content_type = (
                state.queued.pop(0) if state.queued else (state.status, state.body, state.content_type)
            )
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in state.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_POST = do_GET = do_PUT = _handle

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    if ssl_context is not None:
        # A client refusing the certificate fails the handshake in accept(), which the server ignores.
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def stop():
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return state, stop


@dataclass
class DribblingServer:
    """A server that answers every request slowly: its status line, then (``phase``
    "headers") one byte of a header or ("body") the headers and one byte of a
    ``size``-byte body, every ``interval`` seconds. ``sent`` counts the slow bytes sent."""

    host: str = "127.0.0.1"
    port: int = 0
    phase: str = "body"
    size: int = 60
    interval: float = 0.5
    sent: int = 0
    requests: int = 0
    stopped: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:  # the request's head, then its body
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(body) < length:
                body += conn.recv(65536)
            self.requests += 1
            if self.phase == "headers":
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % self.size)
            for _ in range(self.size):
                if self.stopped.wait(self.interval):
                    return
                try:
                    conn.sendall(b"x")
                except OSError:
                    return  # the client gave up
                self.sent += 1


def start_dribbling_server(*, phase: str = "body", size: int = 60, interval: float = 0.5) -> tuple[DribblingServer, callable]:
    """Start a DribblingServer on 127.0.0.1 (a free port); returns its state and a function that stops it."""
    state = DribblingServer(phase=phase, size=size, interval=interval)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    state.port = listener.getsockname()[1]

    def accept_loop():
        while not state.stopped.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=state._serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()

    def stop():
        state.stopped.set()
        thread.join(timeout=5)
        listener.close()

    return state, stop
