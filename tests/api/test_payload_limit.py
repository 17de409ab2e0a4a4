"""RUN_MAX_PAYLOAD_BYTES through the API: POST /runs and the alert receiver answer 400 with
the launcher's one line and store nothing (no run, no alert)."""
from __future__ import annotations

import pytest

from apps.alerts.models import Alert
from apps.orchestration.models import PipelineDefinition, PipelineRun
from tests.api.test_alerts import am_alert, am_group
from tests.api.test_alerts import define as define_triggered
from tests.support import TINY_NODES

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.CELERY_BROKER_IS_EMBEDDED = False
    settings.RUN_MAX_PAYLOAD_BYTES = 2000


def test_post_runs_with_a_too_large_payload_is_400_with_the_launchers_line(api_client):
    PipelineDefinition.objects.create(name="tiny", config={"version": "1.0", "nodes": TINY_NODES})
    writer = api_client("runs:read", "runs:write")
    response = writer.post("/api/v1/runs", {"definition": "tiny", "payload": {"blob": "x" * 1990}})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error == "Payload is larger than 2000 bytes (RUN_MAX_PAYLOAD_BYTES): 2001 bytes as JSON"
    assert not PipelineRun.objects.exists()
    assert writer.post("/api/v1/runs", {"definition": "tiny", "payload": {"blob": "x" * 1989}}).status_code == 201


def test_an_alert_notification_larger_than_a_payload_may_be_is_400_and_stores_nothing(api_client):
    define_triggered("cpu", {"source": "alertmanager"})
    body = am_group(am_alert(summary="s" * 2000))
    response = api_client("alerts").post("/api/v1/alerts/alertmanager", body)
    assert response.status_code == 400
    assert response.json()["error"].startswith("Payload is larger than 2000 bytes (RUN_MAX_PAYLOAD_BYTES): ")
    assert not PipelineRun.objects.exists() and not Alert.objects.exists()
