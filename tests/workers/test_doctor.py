"""manage.py doctor against real workers: the workers and their queues are reported
live, and the environment check (and run_pipeline --dry-run) reports what the
workers lack, as they answer it over the broker, not what the asking process has."""
from __future__ import annotations

import json
import re
import time

import pytest
from django.db.models.functions import Now

from apps.orchestration import rendering
from apps.orchestration.inputs import definition_resolve
from apps.orchestration.models import PipelineDefinition, WorkerQueue
from tests.support import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.rabbitmq]

# The variables the definitions below need; the workers of this module start without them.
NAMES = ("NOTIFY_EMAIL_TO", "DOCTOR_HOOK_URL")
HOOK_SECRET = "https://hooks.example/services/T0D0CT0R9/doctorHookSecret77"
HAVE_THEM = {"NOTIFY_EMAIL_TO": "oncall@example.com", "DOCTOR_HOOK_URL": HOOK_SECRET}
MAIL_NODES = [
    {"id": "metrics", "type": "context", "config": {"include": ["memory"]}, "next": "notify"},
    {"id": "notify", "type": "notify", "config": {"driver": "email"}, "next": "hook"},
    {"id": "hook", "type": "notify", "config": {"driver": "webhook", "url_env": "DOCTOR_HOOK_URL"}},
]
GAPS = "FAIL  environment: variables the active definitions need are not set where their runs execute:"
# Bound on a doctor or dry run that waits for workers that do not answer (2 s of it is the reply wait).
ASK_BOUND_SECONDS = 30


@pytest.fixture(scope="module")
def base_env(base_env):
    """This module's workers and commands start without NAMES, whatever the shell running the tests sets."""
    return {key: value for key, value in base_env.items() if key not in NAMES}


def define(name: str, nodes: list[dict], **top) -> None:
    PipelineDefinition.objects.create(name=name, config={"version": "1.0", "nodes": nodes, **top})


def worker_name(worker) -> str:
    return re.search(r"(test[^\s\"]+@[^\s\"]+) ready\.", worker.log())[1]


def test_doctor_reports_the_live_worker_and_its_queue(worker, cli):
    result = cli("doctor", timeout=60, OUTBOUND_ALLOW_HOSTS="")
    lines = result.stdout.splitlines()
    workers_line = next(line for line in lines if line.split()[1:2] == ["workers:"])
    assert workers_line.startswith("ok    workers: 1 live, 1 on the run queue celery: test")
    assert "(celery" in workers_line
    assert any(line.startswith("ok    broker: ") for line in lines)
    # No beat runs in this module: its periodic tasks never ticked, and nothing is scheduled.
    assert any(line.startswith("warn  beat: has never ticked") for line in lines)
    assert result.exit_code == 0, result.stdout + result.stderr


def test_the_environment_is_the_workers_not_the_asking_process(worker, cli):
    define("mail", MAIL_NODES)
    # This process has both variables; the worker that would run the nodes has neither.
    result = cli("doctor", "--only", "environment", timeout=60, **HAVE_THEM)
    assert result.stdout == (
        f"{GAPS}\n"
        "        mail.notify: NOTIFY_EMAIL_TO is not set on any live worker of queue celery\n"
        "        mail.hook: DOCTOR_HOOK_URL is not set on any live worker of queue celery\n"
    )
    assert result.exit_code == 1
    assert "doctorHookSecret77" not in result.stdout + result.stderr


def test_the_worker_that_lacks_a_variable_is_named_and_host_queues_count(worker, start_worker, cli):
    # The other worker has both variables (this process neither) and serves host doctor-host besides the shared queue.
    start_worker(MONITOR_HOST="doctor-host", **HAVE_THEM)
    define("mail", MAIL_NODES)
    define("mail-on-host", MAIL_NODES, host="doctor-host")  # only the other worker serves it: nothing lacks
    define("mail-nowhere", MAIL_NODES[1:2], host="nowhere")  # no worker serves it: cannot be told
    result = cli("doctor", "--only", "environment", timeout=60)
    lacking = worker_name(worker)
    assert result.stdout == (
        f"{GAPS}\n"
        f"        mail.notify: NOTIFY_EMAIL_TO is not set on worker {lacking} (queue celery)\n"
        f"        mail.hook: DOCTOR_HOOK_URL is not set on worker {lacking} (queue celery)\n"
        "        mail-nowhere.notify: no live worker of queue host.nowhere answered: NOTIFY_EMAIL_TO unchecked\n"
    )
    assert result.exit_code == 1
    assert "doctorHookSecret77" not in result.stdout + result.stderr


def test_a_live_worker_that_does_not_answer_is_named(worker, start_worker, cli):
    silent = start_worker()
    name = worker_name(silent)
    # Live by its presence rows (renewed from its start), as doctor reads them.
    wait_for(lambda: WorkerQueue.objects.filter(worker=name, expires_at__gt=Now()).exists(), what="its presence")
    define("mail", MAIL_NODES)
    silent.freeze()
    try:
        started = time.monotonic()
        result = cli("doctor", "--only", "environment", timeout=60)
        took = time.monotonic() - started
    finally:
        silent.thaw()
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        GAPS,
        "        mail.notify: NOTIFY_EMAIL_TO is not set on any live worker of queue celery",
        "        mail.hook: DOCTOR_HOOK_URL is not set on any live worker of queue celery",
    ]
    assert re.fullmatch(rf"        worker {re.escape(name)} \(queue celery, host\.\S+\) did not answer within 2s", lines[3])
    assert len(lines) == 4
    assert took < ASK_BOUND_SECONDS


def test_dry_run_keeps_the_plan_on_stdout_and_warns_on_stderr(worker, cli, tmp_path):
    path = tmp_path / "mail.json"
    path.write_text(json.dumps({"version": "1.0", "nodes": MAIL_NODES}))
    plan = rendering.render_dry_run(
        resolved=definition_resolve(name=None, config_path=str(path), notify_driver=None),
        payload={}, source="cli", environment="development",
    )
    warnings = (
        "Warning: notify: NOTIFY_EMAIL_TO is not set on any live worker of queue celery\n"
        "Warning: hook: DOCTOR_HOOK_URL is not set on any live worker of queue celery\n"
    )
    result = cli("run_pipeline", "--config", str(path), "--dry-run", timeout=60, **HAVE_THEM)
    assert (result.exit_code, result.stdout, result.stderr) == (0, plan + "\n", warnings)

    as_json = cli("run_pipeline", "--config", str(path), "--dry-run", "--json", timeout=60, **HAVE_THEM)
    assert as_json.exit_code == 0
    assert as_json.json()["nodes"][1]["id"] == "notify"
    assert as_json.stderr == warnings


def test_no_worker_answering_is_said_in_one_line_within_the_bound(worker, cli, tmp_path):
    define("mail", MAIL_NODES)
    path = tmp_path / "mail.json"
    path.write_text(json.dumps({"version": "1.0", "nodes": MAIL_NODES}))
    worker.freeze()
    try:
        started = time.monotonic()
        doctor = cli("doctor", "--only", "environment", timeout=60)
        dry_run = cli("run_pipeline", "--config", str(path), "--dry-run", timeout=60)
        took = time.monotonic() - started
    finally:
        worker.thaw()
    assert doctor.stdout == (
        "warn  environment: no live worker answered within 2s: DOCTOR_HOOK_URL, NOTIFY_EMAIL_TO unchecked\n"
    )
    assert doctor.exit_code == 0
    assert dry_run.exit_code == 0
    assert dry_run.stdout.endswith("Use without --dry-run to execute\n")
    assert dry_run.stderr == "Warning: no live worker answered within 2s: DOCTOR_HOOK_URL, NOTIFY_EMAIL_TO unchecked\n"
    assert took < 2 * ASK_BOUND_SECONDS
