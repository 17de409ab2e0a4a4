"""manage.py doctor against a real worker: the worker and its queues are reported live."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.rabbitmq]


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
