"""The project's .env is read by every process (config/envfile.py), under what the
environment sets, as docker compose passes it; ENV_FILE chooses the file, and the
test suite itself reads none (tests/no_env_file.py)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from config.envfile import env_file_path
from tests.support import ROOT, manage_py

# Prints what a process ends up with: settings parsed from the file, and a plain variable
# as a driver reads it (os.environ), e.g. a webhook URL.
PROBE = (
    "import os; from django.conf import settings; "
    "print(settings.RUN_LEASE_SECONDS, settings.RUN_RETENTION_DAYS, os.environ.get('ENVFILE_PROBE_HOOK'))"
)


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RUN_LEASE_SECONDS", "RUN_RETENTION_DAYS")}
    env.pop("ENVFILE_PROBE_HOOK", None)
    return {**env, **extra}


@pytest.fixture
def env_file(tmp_path):
    path = tmp_path / "probe.env"
    path.write_text(
        "# a comment\n"
        "RUN_LEASE_SECONDS=45\n"
        "RUN_RETENTION_DAYS=7\n"
        "export ENVFILE_PROBE_HOOK='https://hooks.example/a b#c'\n"
    )
    return path


def test_the_test_suite_reads_no_env_file():
    # A developer's .env must not change what the tests see (pytest.ini loads tests.no_env_file).
    assert os.environ.get("ENV_FILE") == ""
    assert env_file_path() is None


def test_a_management_command_reads_the_env_file_and_the_environment_wins(env_file):
    result = manage_py("shell", "-c", PROBE, env=clean_env(ENV_FILE=str(env_file), RUN_RETENTION_DAYS="9"))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "45.0 9 https://hooks.example/a b#c"


def test_without_env_file_the_defaults_hold(env_file):
    result = manage_py("shell", "-c", PROBE, env=clean_env(ENV_FILE=""))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "30.0 30 None"


def test_an_env_file_that_cannot_be_read_stops_the_process_naming_it(tmp_path):
    missing = tmp_path / "nowhere.env"
    result = manage_py("check", env=clean_env(ENV_FILE=str(missing)))
    assert result.exit_code != 0
    assert f"ENV_FILE: cannot read {missing}: No such file or directory" in result.stderr


def shell_exports(env: dict, *names: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "config.envfile", *names], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )


def test_the_shell_gets_the_names_it_asks_for_quoted_and_only_those_the_environment_lacks(env_file):
    result = shell_exports(
        clean_env(ENV_FILE=str(env_file), RUN_RETENTION_DAYS="9"),
        "ENVFILE_PROBE_HOOK", "RUN_RETENTION_DAYS", "RUN_LEASE_SECONDS", "NOT_IN_THE_FILE",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "export ENVFILE_PROBE_HOOK='https://hooks.example/a b#c'\nexport RUN_LEASE_SECONDS=45\n"
    # What the shell makes of it: the value exactly as written in the file.
    shown = subprocess.run(
        ["bash", "-c", f'{result.stdout}\nprintf %s "$ENVFILE_PROBE_HOOK"'], capture_output=True, text=True, timeout=30
    )
    assert shown.stdout == "https://hooks.example/a b#c"


def test_the_shell_is_told_in_one_line_when_the_file_cannot_be_read(tmp_path):
    result = shell_exports(clean_env(ENV_FILE=str(tmp_path / "nowhere.env")), "WEB_BIND")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"ENV_FILE: cannot read {tmp_path / 'nowhere.env'}: No such file or directory\n"


def test_the_web_service_config_reads_the_env_file_before_its_own_variables(tmp_path):
    # Gunicorn reads config/gunicorn.py before Django: the file must be read there too.
    env_file = tmp_path / "web.env"
    env_file.write_text("WEB_THREADS=3\nWEB_BIND=127.0.0.1:9123\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEB_")}
    proc = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "--print-config", "config.wsgi:application"],
        cwd=ROOT, env={**env, "ENV_FILE": str(env_file), "WEB_THREADS": "5"}, capture_output=True, text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    printed = {key.strip(): value.strip() for key, _, value in (line.partition(" = ") for line in proc.stdout.splitlines())}
    assert printed["bind"] == "['127.0.0.1:9123']"
    assert printed["threads"] == "5"  # the environment wins over the file
