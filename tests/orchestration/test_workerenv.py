"""Which variables a definition's nodes need and on the workers of which queues
(apps/orchestration/workerenv.py). What live workers answer is tested with real
workers in tests/workers/test_doctor.py."""
from __future__ import annotations

import pytest

from apps.notify.services import notification_channel_create
from apps.orchestration.launchrequest import Targets
from apps.orchestration.workerenv import EnvNeed, definition_env_needs, target_queues, workers_env_report

pytestmark = pytest.mark.django_db


def test_env_options_channels_drivers_and_providers_name_their_variables(monkeypatch):
    notification_channel_create(name="ops-slack", driver="slack", config={"webhook_url_env": "OPS_SLACK_URL"})
    # Set here or not, a variable is needed all the same: the workers are asked, not this process.
    monkeypatch.setenv("TEAM_PD_KEY", "pd-routing-key-123456")
    config = {"version": "1.0", "nodes": [
        {"id": "analyze", "type": "intelligence", "config": {"provider": "openai"}, "next": "page"},
        {"id": "page", "type": "notify", "config": {"driver": "pagerduty", "routing_key_env": "TEAM_PD_KEY"}},
        {"id": "chat", "type": "notify", "config": {"channel": "ops-slack"}},
        {"id": "mail", "type": "notify", "config": {"driver": "email"}},
        {"id": "mail-to", "type": "notify", "config": {"driver": "email", "to": ["oncall@example.com"]}},
        {"id": "lost", "type": "notify", "config": {"channel": "gone"}},
    ]}
    needs, problems = definition_env_needs(config=config, target="", prefix="triage.")
    assert [(need.label, need.names) for need in needs] == [
        ("triage.analyze", ("OPENAI_API_KEY",)),
        ("triage.page", ("TEAM_PD_KEY",)),
        ("triage.chat", ("OPS_SLACK_URL",)),
        ("triage.mail", ("NOTIFY_EMAIL_TO",)),
    ]
    assert {need.queues for need in needs} == {("celery",)}
    assert problems == ["triage.lost: Notification channel not found: gone"]


@pytest.mark.parametrize(("target", "queues", "every_host"), [
    ("", ("celery",), False),
    ("web-01", ("host.web-01",), False),
    (["web-01", "db-9"], ("host.web-01", "host.db-9"), False),
    ("all", (), True),
    ("auto", ("celery",), True),
    (Targets(hosts=["db-9"]), ("host.db-9",), False),
    (Targets(hosts=[""]), ("celery",), False),
])
def test_the_queues_a_target_sends_runs_to(target, queues, every_host):
    assert target_queues(target) == (queues, every_host)


def test_nothing_needed_asks_no_one():
    # No broker is touched (none runs for this test): the report is empty at once.
    report = workers_env_report(needs=[EnvNeed(label="n", names=(), queues=("celery",))])
    assert (report.unasked, report.gaps, report.unchecked, report.answered) == (None, [], [], [])
