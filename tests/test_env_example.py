"""`.env.example` lists every variable the project reads, and docker-compose
passes `.env` to every container built from the repository."""
from __future__ import annotations

import re

import yaml
from django.conf import settings

from tests.support import ROOT

# `env.str("NAME", ...)`, `env.dj_db_url("NAME", ...)`... in config/settings.py.
_SETTINGS_READ = re.compile(r"\benv\.\w+\(\s*\"([A-Z][A-Z0-9_]*)\"")
# Conventional variables of drivers and providers: DEFAULT_ENV = "SLACK_WEBHOOK_URL", RECIPIENTS_ENV = ...
_ENV_CONSTANT = re.compile(r"^[A-Z_]*ENV\s*=\s*\"([A-Z][A-Z0-9_]*)\"", re.MULTILINE)
# Direct reads: os.environ.get("OPENAI_MODEL"...), os.environ["X"], os.getenv("X").
_ENVIRON_READ = re.compile(r"os\.(?:environ\.get\(|environ\[|getenv\()\s*\"([A-Z][A-Z0-9_]*)\"")
# A line of .env.example naming a variable, set or commented out: `# NAME=...` or `NAME=...`.
_EXAMPLE_LINE = re.compile(r"^#?\s?([A-Z][A-Z0-9_]*)=(.*)$", re.MULTILINE)
# Compose's own interpolations: ${NAME} or ${NAME:-default}.
_COMPOSE_VARIABLE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)")
# Set by the runtime, not by an operator.
_NOT_OPERATORS = {"DJANGO_SETTINGS_MODULE"}
APP_SERVICES = ("migrate", "worker", "beat", "web", "cli")


def example_variables() -> dict[str, str]:
    return dict(_EXAMPLE_LINE.findall((ROOT / ".env.example").read_text()))


def code_variables() -> set[str]:
    names = set(_SETTINGS_READ.findall((ROOT / "config" / "settings.py").read_text()))
    for folder in ("apps", "workers"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            names |= set(_ENV_CONSTANT.findall(text)) | set(_ENVIRON_READ.findall(text))
    return names - _NOT_OPERATORS


def test_the_parsers_find_what_the_project_reads():
    # Guards the check below: a regex that matched nothing would pass it vacuously.
    names = code_variables()
    assert {"DATABASE_URL", "CELERY_BROKER_URL", "RUN_LEASE_SECONDS", "OUTBOUND_ALLOW_HOSTS"} <= names
    assert {"SLACK_WEBHOOK_URL", "PAGERDUTY_ROUTING_KEY", "NOTIFY_WEBHOOK_URL", "NOTIFY_EMAIL_TO"} <= names
    assert {"OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL", "PAGERDUTY_EVENTS_URL"} <= names


def test_every_variable_the_project_reads_is_in_env_example():
    listed = set(example_variables())
    wanted = code_variables() | set(settings.SECRET_ENV_VARS)
    wanted |= set(_COMPOSE_VARIABLE.findall((ROOT / "docker-compose.yml").read_text()))
    assert sorted(wanted - listed) == []


def test_env_example_holds_no_secret_value_and_a_comment_for_each_variable():
    text = (ROOT / ".env.example").read_text()
    lines = text.splitlines()
    for name, value in example_variables().items():
        if name in settings.SECRET_ENV_VARS or name in ("DJANGO_SECRET_KEY", "POSTGRES_PASSWORD"):
            assert value == "", f"{name} has a value in .env.example"
        index = next(i for i, line in enumerate(lines) if re.match(rf"^#?\s?{name}=", line))
        above = lines[index - 1]
        # The line above is its one-line comment (prose) or a sibling of the same group (EMAIL_..., POSTGRES_...).
        assert above.startswith("# ") and ("=" not in above or _EXAMPLE_LINE.match(above)), name


def test_env_is_ignored_by_git():
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def app_services(compose: dict) -> list[str]:
    """The services built from this repository."""
    return [name for name, service in compose["services"].items() if "build" in service]


def test_compose_passes_env_file_to_every_app_container():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert set(APP_SERVICES) <= set(app_services(compose))
    for service in app_services(compose):
        env_files = compose["services"][service].get("env_file")
        assert env_files == [{"path": ".env", "required": False}], service
    # The database and broker images have no use for the app's secrets.
    for service in ("redis", "postgres"):
        assert "env_file" not in compose["services"][service]


def test_compose_health_checks_run_doctor_with_checks_it_has():
    from apps.orchestration.doctor import CHECKS

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service in ("worker", *host_workers(compose), "beat"):
        command = compose["services"][service]["healthcheck"]["test"][1]
        selected = re.search(r"manage\.py doctor --only (\S+)", command)
        assert selected, service
        assert set(selected[1].split(",")) <= set(CHECKS), service


def host_workers(compose: dict) -> list[str]:
    """The services of workers that serve a monitored host (MONITOR_HOST set)."""
    return [
        name for name, service in compose["services"].items()
        if "MONITOR_HOST" in (service.get("environment") or {})
    ]


def test_compose_host_workers_are_workers_serving_a_valid_host_name():
    from apps.hostnames import host_name

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    names = host_workers(compose)
    assert names, "docker-compose.yml shows no worker for a monitored host"
    hosts = [services[name]["environment"]["MONITOR_HOST"] for name in names]
    assert len(set(hosts)) == len(hosts)
    for name, host in zip(names, hosts, strict=True):
        service = services[name]
        assert host_name(host) == host, name
        # The shared worker's command and health check, and the shared environment besides MONITOR_HOST.
        for key in ("command", "healthcheck", "depends_on", "stop_grace_period", "env_file"):
            assert service[key] == services["worker"][key], (name, key)
        assert {k: v for k, v in service["environment"].items() if k != "MONITOR_HOST"} == services["worker"]["environment"]
