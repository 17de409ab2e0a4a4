"""A real Prometheus scraping /metrics of a database, as a deployment would.

Starts the web service (gunicorn with config/gunicorn.py, on a free port of
127.0.0.1) on the database and broker of the environment given, and the
Debian package's Prometheus scraping it every 10 s with its default scrape
timeout (10 s), until ``--scrapes`` scrapes were made; then asks
Prometheus's own API what it saw: how many scrapes, whether every one was
up, and how long they took (``scrape_duration_seconds``) and how many
samples they carried. Both processes are stopped by their pids at the end.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_scale_grown METRICS_PUBLIC=1 \\
        .venv/bin/python -m bench.prometheus_scrape --scrapes 6

bench/scale.py runs it on each database it measures. With METRICS_PUBLIC
unset an API key of scope ``metrics`` must be given (``--key``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = 10  # seconds between scrapes; the timeout stays Prometheus' default, 10 s
READY_TIMEOUT = 120
STOP_TIMEOUT = 15


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except OSError:
        return 0, b""


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.5)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)


def measure(environ: dict, *, scrapes: int = 6, key: str | None = None) -> dict:
    """Scrape /metrics of the project run with ``environ`` by a real Prometheus ``scrapes`` times;
    what Prometheus recorded. Raises RuntimeError when a process does not start."""
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    folder = tempfile.mkdtemp(prefix="bench-prom-")
    web_port, prom_port = _free_port(), _free_port()
    web_log = open(Path(folder) / "web.log", "wb")  # closed below, after the process
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "config" / "gunicorn.py"), "config.wsgi:application"],
        cwd=ROOT, env={**environ, "WEB_BIND": f"127.0.0.1:{web_port}", "WEB_CONCURRENCY": "1"},
        stdout=web_log, stderr=subprocess.STDOUT,
    )
    prometheus = None
    try:
        _wait(lambda: _get(f"http://127.0.0.1:{web_port}/healthz", 2)[0] == 200, READY_TIMEOUT, "the web service")
        job: dict = {"job_name": "pipelines", "scrape_interval": f"{INTERVAL}s",
                     "static_configs": [{"targets": [f"127.0.0.1:{web_port}"]}]}
        if key:
            job["authorization"] = {"type": "Bearer", "credentials": key}
        config = Path(folder) / "prometheus.yml"
        config.write_text(json.dumps({"scrape_configs": [job]}))  # JSON is YAML
        config.chmod(0o600)
        with open(Path(folder) / "prometheus.log", "wb") as prom_log:
            prometheus = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={folder}/data",
                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                stdout=subprocess.DEVNULL, stderr=prom_log,
            )

        def query(expr: str) -> float | None:
            url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            status, body = _get(url)
            if status != 200:
                return None
            result = json.loads(body)["data"]["result"]
            return float(result[0]["value"][1]) if result else None

        window = f"{(scrapes + 2) * INTERVAL}s"
        _wait(lambda: (query(f"count_over_time(up[{window}])") or 0) >= scrapes,
              (scrapes + 6) * INTERVAL + READY_TIMEOUT, f"{scrapes} scrapes")
        return {
            "scrapes": int(query(f"count_over_time(up[{window}])") or 0),
            "all_up": query(f"min_over_time(up[{window}])") == 1.0,
            "duration_max_s": query(f"max_over_time(scrape_duration_seconds[{window}])"),
            "duration_avg_s": query(f"avg_over_time(scrape_duration_seconds[{window}])"),
            "samples": query(f"max_over_time(scrape_samples_scraped[{window}])"),
            "timeout_s": 10,
        }
    finally:
        if prometheus is not None:
            _stop(prometheus)
        _stop(web)
        web_log.close()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="A real Prometheus scraping /metrics of DATABASE_URL's database.")
    parser.add_argument("--scrapes", type=int, default=6, help="scrapes to wait for (default 6, 10 s apart)")
    parser.add_argument("--key", help="an API key of scope metrics (else METRICS_PUBLIC=1 must be set)")
    args = parser.parse_args()
    if args.scrapes < 1:
        parser.error("--scrapes must be at least 1")
    print(json.dumps(measure(dict(os.environ), scrapes=args.scrapes, key=args.key)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
