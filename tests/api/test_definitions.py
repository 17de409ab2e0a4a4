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
    assert api_client("runs:read").get("/api/v1/definitions").json() == {"definitions": [], "next_cursor": None}


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
    assert api_client("runs:read").get("/api/v1/schedules").json() == {"schedules": [], "next_cursor": None}


def walk(client, path: str, key: str, **params) -> list[list[str]]:
    """Every page of the list at ``path`` by following next_cursor: the names on each page."""
    pages, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor is not None else {})}
        response = client.get(path, query)
        assert response.status_code == 200, response.content
        body = response.json()
        pages.append([item[key] for item in body[path.rsplit("/", 1)[1]]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert cursor == pages[-1][-1]  # the last name of the page


def test_definitions_and_schedules_come_a_page_at_a_time_by_name(api_client):
    names = [f"host-{number:02d}" for number in range(7)] + ["Disk-Full", "disk_slow"]
    for name in names:
        scheduled(name, {"every": 60})
    client = api_client("runs:read")
    ordered = sorted(names)
    for path, key in (("/api/v1/definitions", "name"), ("/api/v1/schedules", "definition")):
        assert walk(client, path, key, limit=3) == [ordered[0:3], ordered[3:6], ordered[6:9]]  # full: no empty page
        assert walk(client, path, key, limit=4) == [ordered[0:4], ordered[4:8], ordered[8:9]]
        assert walk(client, path, key) == [ordered]  # 100 by default
        # The filter holds across pages, in any case.
        assert walk(client, path, key, q="DISK", limit=1) == [["Disk-Full"], ["disk_slow"]]
        assert walk(client, path, key, q="nothing-like-it") == [[]]
        # A cursor is a name: entries added before it do not shift the pages after it.
        assert walk(client, path, key, cursor="host-04", limit=2) == [["host-05", "host-06"]]


@pytest.mark.parametrize("path", ["/api/v1/definitions", "/api/v1/schedules"])
@pytest.mark.parametrize(("query", "message"), [
    ({"limit": 0}, "limit must be from 1 to 1000"),
    ({"limit": 1001}, "limit must be from 1 to 1000"),
    ({"q": "disk full"}, "q must be part of a definition name: letters, digits, '-' and '_' (at most 100)"),
    ({"q": "x" * 101}, "q must be part of a definition name: letters, digits, '-' and '_' (at most 100)"),
    ({"cursor": "pipeline:disk"}, "cursor is not one this listing gave (use next_cursor as it was returned)"),
    ({"cursor": "a\x00b"}, "cursor is not one this listing gave (use next_cursor as it was returned)"),
])
def test_a_page_no_list_by_name_can_give_is_refused_with_the_reason(api_client, definitions, path, query, message):
    response = api_client("runs:read").get(path, query)
    assert response.status_code == 400
    assert response.json() == {"error": message, "errors": [message]}
