"""tests/alertmanager.py: a real Alertmanager delivers its notifications, with the
Bearer key the README's `http_config.authorization` sets, to a real HTTP server
on 127.0.0.1 (tests/httpserver.py), in the shape the alert receiver reads."""
from __future__ import annotations

import re
import secrets

from tests.alertmanager import RECEIVER, alert
from tests.support import wait_for

NOTIFY_TIMEOUT = 60  # seconds: group_wait / group_interval are 1-2 s, plus a loaded machine


def notifications(server, status: str) -> list[dict]:
    return [r for r in list(server.requests) if r["json"] and r["json"].get("status") == status]


def test_alertmanager_posts_firing_then_resolved_groups_with_the_bearer_key(alertmanager, http_server):
    key = "am_" + secrets.token_urlsafe(32)
    manager = alertmanager(receiver_url=http_server.url("/api/v1/alerts/alertmanager"), key=key)
    labels = {"severity": "critical", "instance": "web-01:9100"}
    manager.post_alerts([alert("HighCPU", labels=labels, annotations={"summary": "CPU at 97%"})])

    (firing,) = wait_for(lambda: notifications(http_server, "firing"), timeout=NOTIFY_TIMEOUT,
                         what="Alertmanager's firing notification")
    assert firing["method"] == "POST" and firing["path"] == "/api/v1/alerts/alertmanager"
    assert firing["headers"]["authorization"] == f"Bearer {key}"
    assert firing["headers"]["content-type"] == "application/json"
    body = firing["json"]
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == RECEIVER
    assert isinstance(body["groupKey"], str) and "HighCPU" in body["groupKey"]
    assert body["groupLabels"] == {"alertname": "HighCPU"}
    assert body["truncatedAlerts"] == 0
    (item,) = body["alerts"]
    assert item["status"] == "firing"
    assert item["labels"] == {"alertname": "HighCPU", **labels}
    assert item["annotations"] == {"summary": "CPU at 97%"}
    assert re.fullmatch(r"[0-9a-f]{16}", item["fingerprint"])

    # The same alert, ended: the group's resolved notice, same group, same fingerprint.
    manager.post_alerts([alert("HighCPU", labels=labels, resolved=True)])
    (resolved,) = wait_for(lambda: notifications(http_server, "resolved"), timeout=NOTIFY_TIMEOUT,
                           what="Alertmanager's resolved notification")
    assert resolved["headers"]["authorization"] == f"Bearer {key}"
    assert resolved["json"]["groupKey"] == body["groupKey"]
    (ended,) = resolved["json"]["alerts"]
    assert ended["status"] == "resolved" and ended["fingerprint"] == item["fingerprint"]
    assert ended["endsAt"] > ended["startsAt"]
    # The key is in the configuration Alertmanager read, never in what it logs.
    assert key not in manager.log()


def test_one_group_carries_every_alert_of_its_labels_with_distinct_fingerprints(alertmanager, http_server):
    manager = alertmanager(receiver_url=http_server.url("/hook"), key=secrets.token_urlsafe(32),
                           group_by=["cluster"])
    manager.post_alerts([alert(f"Disk{i}", labels={"cluster": "prod", "instance": f"db-0{i}"}) for i in range(3)])

    # Alertmanager adds the alerts of one POST to the group one by one: on a slow machine its first
    # flush (group_wait) may come before the last one, which the next flush (group_interval) carries.
    firing = wait_for(
        lambda: next((n for n in notifications(http_server, "firing") if len(n["json"]["alerts"]) == 3), None),
        timeout=NOTIFY_TIMEOUT, what="Alertmanager's firing notification of the whole group",
    )
    body = firing["json"]
    assert body["groupLabels"] == {"cluster": "prod"} and body["commonLabels"] == {"cluster": "prod"}
    assert sorted(a["labels"]["instance"] for a in body["alerts"]) == ["db-00", "db-01", "db-02"]
    assert len({a["fingerprint"] for a in body["alerts"]}) == 3


def test_stop_ends_the_process(alertmanager, http_server):
    manager = alertmanager(receiver_url=http_server.url("/hook"), key=secrets.token_urlsafe(32))
    assert manager.alerts() == []
    manager.stop()
    assert manager.proc.poll() is not None and not manager.folder.exists()
