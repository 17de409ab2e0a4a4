"""GET /api/v1/definitions, /api/v1/definitions/<name> and /api/v1/schedules (scope runs:read),
each answer checked against the OpenAPI document."""
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.orchestration.models import PipelineDefinition
from apps.orchestration.schedules import schedule_sync
from tests.orchestration.test_hostile_input import TINY, cli
from tests.orchestration.test_list_schedules import beat_sent, scheduled
from tests.support import make_run

pytestmark = pytest.mark.django_db

TRIGGERS = [
    {"alert": {"source": "alertmanager", "match": 'alert.severity == "critical"', "on": ["firing", "resolved"]}},
    {"alert": {"source": "grafana"}},
]


@pytest.fixture
def definitions():
    watched = PipelineDefinition.objects.create(
        name="disk-watch", description="Disk alerts", tags=["disk"],
        config={**TINY, "schedule": {"every": 300}, "triggers": TRIGGERS},
    )
    schedule_sync(definition=watched)
    PipelineDefinition.objects.create(name="asleep", is_active=False, config=TINY)
    return watched


def test_definitions_are_listed_by_name_with_schedule_and_triggers(api_client, definitions):
    response = api_client("runs:read").get("/api/v1/definitions")
    assert response.status_code == 200
    listed = response.json()["definitions"]
    assert [item["name"] for item in listed] == ["asleep", "disk-watch"]
    asleep, watch = listed
    assert asleep == {
        "name": "asleep", "description": "", "enabled": False, "schedule": None, "triggers": [],
        "updated_at": asleep["updated_at"],
    }
    assert watch["description"] == "Disk alerts" and watch["enabled"] is True
    assert watch["schedule"] == "every 300s"
    assert watch["triggers"] == [
        {"type": "alert", "source": "alertmanager", "on": ["firing", "resolved"], "match": 'alert.severity == "critical"'},
        {"type": "alert", "source": "grafana", "on": ["firing"], "match": None},
    ]
    assert "config" not in watch
    updated = PipelineDefinition.objects.get(name="disk-watch").updated_at
    assert watch["updated_at"] == updated.isoformat()


def test_no_definitions_is_an_empty_list(api_client):
    assert api_client("runs:read").get("/api/v1/definitions").json() == {"definitions": []}


def test_one_definition_has_its_whole_config(api_client, definitions):
    response = api_client("runs:read").get("/api/v1/definitions/disk-watch")
    assert response.status_code == 200
    shown = response.json()
    assert shown["config"] == definitions.config
    assert shown["name"] == "disk-watch" and shown["tags"] == ["disk"] and shown["version"] == "1.0"
    assert shown["schedule"] == "every 300s" and len(shown["triggers"]) == 2


def test_an_unknown_definition_is_404_json(api_client, definitions):
    response = api_client("runs:read").get("/api/v1/definitions/nope")
    assert response.status_code == 404
    assert response.json() == {"error": "No pipeline definition has that name"}


def test_a_schedule_stored_unvalidated_is_shown_not_refused(api_client):
    PipelineDefinition.objects.create(name="odd", config={**TINY, "schedule": {"every": "soon"}, "triggers": "x"})
    listed = api_client("runs:read").get("/api/v1/definitions").json()["definitions"]
    assert listed[0]["schedule"] == "unreadable schedule" and listed[0]["triggers"] == []


@pytest.mark.parametrize("path", ["/api/v1/definitions", "/api/v1/definitions/disk-watch", "/api/v1/schedules"])
def test_the_routes_need_runs_read(api_client, definitions, path):
    assert api_client().get(path).status_code == 401
    response = api_client("runs:write", "alerts", "metrics").get(path)
    assert response.status_code == 403
    assert response.json() == {"error": "This API key does not have the scope 'runs:read'"}


def test_schedules_are_what_list_schedules_json_prints(api_client):
    scheduled("every-five", {"every": 300})
    scheduled("berlin-nine", {"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin", "overlap": "allow"})
    run = make_run(name="every-five", trigger="schedule", status="completed", finished_at=timezone.now())
    beat_sent("every-five", timezone.now() - timedelta(seconds=10))
    response = api_client("runs:read").get("/api/v1/schedules")
    assert response.status_code == 200
    listed = response.json()["schedules"]
    printed = json.loads(cli("list_schedules", "--json").stdout)
    assert [item["definition"] for item in listed] == ["berlin-nine", "every-five"]
    # The same listing (next_due_at aside for cron, computed from each call's own "now").
    for ours, theirs in zip(listed, printed, strict=True):
        assert {**ours, "next_due_at": None} == {**theirs, "next_due_at": None}
    assert listed[1]["last_run"]["run_id"] == run.pk
    assert listed[0]["cron"] == "0 9 * * 1-5" and listed[0]["timezone"] == "Europe/Berlin"


def test_no_schedules_is_an_empty_list(api_client):
    assert api_client("runs:read").get("/api/v1/schedules").json() == {"schedules": []}
