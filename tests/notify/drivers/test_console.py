"""The console driver writes the message to its logger."""
from __future__ import annotations

import logging

from apps.notify.services import notification_send, notification_validate
from tests.notify.support import RESOLVED_LINE, make_notice


def test_console_driver_logs_title_and_body(apps_log, message):
    result = notification_send(driver="console", config={}, message=message)
    records = [r for r in apps_log.records if r.name == "apps.notify.console"]
    assert len(records) == 1
    assert records[0].levelno == logging.INFO
    assert message.title in records[0].getMessage()
    assert message.body in records[0].getMessage()
    assert result == {
        "driver": "console",
        "channels_attempted": 1,
        "succeeded": 1,
        "failed": 0,
        "deliveries": [{"channel": "console", "ok": True, "detail": "written to log"}],
    }


def test_console_driver_rejects_options():
    assert notification_validate(config={"driver": "console", "timeout_seconds": 5}) == [
        "unknown option for driver console: timeout_seconds"
    ]


def test_console_driver_names_the_kind_of_a_notice(apps_log):
    notification_send(driver="console", config={}, message=make_notice("resolved"))
    [record] = [r for r in apps_log.records if r.name == "apps.notify.console"]
    assert record.getMessage().startswith(f"Resolved notice: [RESOLVED] health-check on web-07\n{RESOLVED_LINE}\n")


def test_console_driver_prints_a_plain_notification_as_title_and_body(apps_log, message):
    notification_send(driver="console", config={}, message=message)
    [record] = [r for r in apps_log.records if r.name == "apps.notify.console"]
    assert record.getMessage() == f"{message.title}\n{message.body}"
