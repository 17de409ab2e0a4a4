"""The web service is served the same way in both deployments: gunicorn with
config/gunicorn.py, started by scripts/worker.sh on a laptop and by
docker-compose.yml's `web` service, which publishes it on 127.0.0.1 only
unless told otherwise. The settings are read back from gunicorn itself
(`--print-config`), not from the file's text."""
from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml

from tests.support import ROOT

GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
SERVE = "gunicorn -c config/gunicorn.py config.wsgi:application"
WEB_VARIABLES = ("WEB_BIND", "WEB_CONCURRENCY", "WEB_THREADS")


def gunicorn_config(**variables: str) -> tuple[int, dict[str, str], str]:
    """Exit code, settings (name -> printed value) and stderr of gunicorn's `--print-config` with
    config/gunicorn.py, under the environment plus ``variables`` (none of WEB_* inherited)."""
    env = {k: v for k, v in os.environ.items() if k not in WEB_VARIABLES}
    env.update(variables)
    proc = subprocess.run([str(GUNICORN), "-c", "config/gunicorn.py", "--print-config", "config.wsgi:application"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    settings = dict(re.findall(r"^(\w+)\s+= (.*)$", proc.stdout, re.MULTILINE))
    return proc.returncode, settings, proc.stderr


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_gunicorn_defaults_hold_an_api_wait_and_serve_loopback_only():
    code, settings, stderr = gunicorn_config()
    assert code == 0, stderr
    assert settings["bind"] == "['127.0.0.1:8000']"
    # Threads: a request waiting up to 60 s for a run holds a thread, not a whole process.
    assert settings["worker_class"] == "gthread"
    assert (settings["workers"], settings["threads"]) == ("2", "8")
    # Neither the worker timeout nor a graceful stop cuts a 60 s wait short.
    assert int(settings["timeout"]) > 60 and int(settings["graceful_timeout"]) > 60
    assert (settings["accesslog"], settings["errorlog"]) == ("-", "-")
    # No control socket in the user's home shared by every gunicorn of the machine.
    assert settings["control_socket_disable"] == "True"


def test_gunicorn_reads_bind_processes_and_threads_from_the_environment():
    code, settings, stderr = gunicorn_config(WEB_BIND="0.0.0.0:9001", WEB_CONCURRENCY="3", WEB_THREADS="16")
    assert code == 0, stderr
    assert (settings["bind"], settings["workers"], settings["threads"]) == ("['0.0.0.0:9001']", "3", "16")
    # Empty means unset (gunicorn reads an empty WEB_CONCURRENCY itself, so that one stays out).
    code, settings, stderr = gunicorn_config(WEB_BIND="", WEB_THREADS="")
    assert code == 0, stderr
    assert (settings["bind"], settings["threads"]) == ("['127.0.0.1:8000']", "8")


@pytest.mark.parametrize(("name", "value"), [
    ("WEB_CONCURRENCY", "0"), ("WEB_THREADS", "0"), ("WEB_THREADS", "-4"), ("WEB_THREADS", "1.5"),
])
def test_a_bad_process_or_thread_count_stops_gunicorn_with_one_line(name, value):
    code, settings, stderr = gunicorn_config(**{name: value})
    assert code != 0 and settings == {}
    assert stderr == f"{name} must be a whole number of at least 1, not {value!r}\n"


def test_compose_web_and_worker_sh_serve_the_same_gunicorn_settings():
    command = compose()["services"]["web"]["command"]
    assert command[:2] == ["sh", "-c"]
    assert command[2].endswith(f"&& exec {SERVE}")
    script = (ROOT / "scripts" / "worker.sh").read_text()
    assert f".venv/bin/{SERVE} >>" in script
    # Every gunicorn option comes from the one file: none is given on either command line.
    assert "--" not in command[2].split("&&")[-1]


def test_compose_web_listens_in_its_container_and_is_published_on_loopback_only():
    services = compose()["services"]
    web = services["web"]
    assert web["environment"]["WEB_BIND"] == "0.0.0.0:8000"
    # The shared environment, plus the web service's own variables, passed on from the shell or .env.
    own = {k: v for k, v in web["environment"].items() if k not in WEB_VARIABLES}
    assert own == services["worker"]["environment"]
    # Compose's fallbacks are config/gunicorn.py's own defaults.
    code, settings, stderr = gunicorn_config()
    assert code == 0, stderr
    assert web["environment"]["WEB_CONCURRENCY"] == f"${{WEB_CONCURRENCY:-{settings['workers']}}}"
    assert web["environment"]["WEB_THREADS"] == f"${{WEB_THREADS:-{settings['threads']}}}"
    (published,) = web["ports"]
    match = re.fullmatch(r"\$\{WEB_PUBLISH:-([^}]+)\}:8000", published)
    assert match and match[1] == "127.0.0.1:8000"
    # Nothing else is published on the Docker host: Redis and PostgreSQL stay on compose's network.
    assert [name for name, service in services.items() if "ports" in service] == ["web"]


def test_compose_web_health_check_and_stop_fit_the_service():
    web = compose()["services"]["web"]
    check = web["healthcheck"]["test"]
    assert check[0] == "CMD" and "http://127.0.0.1:8000/healthz" in check[-1]
    code, settings, stderr = gunicorn_config()
    assert code == 0, stderr
    grace = web["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) > int(settings["graceful_timeout"])
