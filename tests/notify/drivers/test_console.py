"""The console driver writes the message to its logger."""
from __future__ import annotations

import logging

import pytest

from apps.notify.services import notification_send, notification_validate


@pytest.fixture
def console_log(caplog):
    """caplog, attached to the console driver's logger: the settings stop "apps"
    loggers from propagating to the root logger caplog normally listens on."""
    logger = logging.getLogger("apps.notify.console")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="apps.notify.console"):
            yield caplog
    finally:
        logger.removeHandler(caplog.handler)


def test_console_driver_logs_title_and_body(console_log, message):
    result = notification_send(driver="console", config={}, message=message)
    records = [r for r in console_log.records if r.name == "apps.notify.console"]
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
