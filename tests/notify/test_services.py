"""Notify services: driver lookup, the delivery summary, and sending through named channels."""
from __future__ import annotations

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from apps.notify.base import Driver, Message, drivers
from apps.notify.services import (
    ChannelUnavailable,
    notification_channel_create,
    notification_channel_send,
    notification_channels_send,
    notification_send,
    notification_validate,
)
from tests.notify.support import assert_not_in

SLACK_TOKEN = "/services/T0/B0/sl4ck-t0k3n"


def test_driver_defaults_to_console():
    assert notification_validate(config={}) == []


def test_unknown_driver_is_reported_by_name():
    assert notification_validate(config={"driver": "pigeon"}) == ["unknown driver: pigeon"]


def test_node_keys_are_not_passed_to_the_driver():
    assert notification_validate(config={"driver": "console", "required": False}) == []


def test_sending_through_an_unknown_driver_is_a_failed_delivery():
    result = notification_send(driver="pigeon", config={}, message=Message("t", "b", "ok"))
    assert (result["channels_attempted"], result["succeeded"], result["failed"]) == (1, 0, 1)
    assert result["deliveries"][0]["detail"] == "unknown driver: pigeon"


# --- validating a node that names channels: pure, no database -----------------
# These tests are not marked django_db, so any database access would fail them.


@pytest.mark.parametrize(
    "config",
    [
        {"channel": "ops-slack"},
        {"channel": "ops_slack", "required": False},
        {"channels": ["ops-slack", "ops-pd"]},
        {"channel": "ops-slack", "timeout_seconds": 3, "username": "bot"},
        {"driver": "slack", "channel": "#ops"},  # with a driver, `channel` is Slack's own option
    ],
)
def test_valid_channel_configs_have_no_messages(config):
    assert notification_validate(config=config) == []


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"channel": ""}, ["channel must be the name of a notification channel (letters, digits, - and _)"]),
        ({"channel": 3}, ["channel must be the name of a notification channel (letters, digits, - and _)"]),
        ({"channels": []}, ["channels must be a non-empty list of notification channel names"]),
        ({"channels": "ops"}, ["channels must be a non-empty list of notification channel names"]),
        ({"channels": ["a", "b", "a"]}, ["channels lists a more than once"]),
        ({"channel": "a", "channels": ["b"]}, ["use either channel or channels, not both"]),
        ({"driver": "slack", "channels": ["a"]}, ["use either driver or channels, not both (a channel sets its driver)"]),
        ({"driver": "webhook", "channel": "ops"}, ["unknown option for driver webhook: channel"]),
        ({"driver": "slack", "channel": "ops-slack"}, ["channel must be a Slack channel: #name, @user or a channel id"]),
        ({"channel": "ops", "colour": "red"}, ["unknown option for notify channel: colour"]),
        (
            {"channel": "ops", "routing_key": "R0UT1NG"},
            [
                "routing_key is a secret and must not be written in the definition: "
                "put it in an environment variable and name it with routing_key_env"
            ],
        ),
    ],
)
def test_bad_channel_configs_are_reported(config, expected):
    assert notification_validate(config=config) == expected


# --- sending through channels -------------------------------------------------


@pytest.fixture
def slack_channel(db, http_server, monkeypatch):
    """A stored slack channel whose webhook is http_server; returns the server."""
    http_server.answer_raw(b"ok", 200, "text/plain")
    monkeypatch.setenv("OPS_SLACK_URL", http_server.url(SLACK_TOKEN))
    notification_channel_create(
        name="ops-slack", driver="slack", config={"webhook_url_env": "OPS_SLACK_URL", "channel": "#ops"}
    )
    return http_server


MESSAGE = Message("[WARNING] Memory at 85%", "Memory at 85%", "warning", {"run": {"pipeline": "p"}})


def test_channel_send_uses_the_channels_driver_and_config(slack_channel):
    result = notification_channel_send(name="ops-slack", overrides={}, message=MESSAGE)
    assert result == {
        "channel": "ops-slack",
        "driver": "slack",
        "channels_attempted": 1,
        "succeeded": 1,
        "failed": 0,
        "deliveries": [{"channel": "slack", "ok": True, "detail": "HTTP 200"}],
    }
    assert slack_channel.last["path"] == SLACK_TOKEN
    assert slack_channel.last["json"]["channel"] == "#ops"
    assert_not_in(result, "sl4ck-t0k3n")


def test_node_options_override_the_channels(slack_channel):
    notification_channel_send(name="ops-slack", overrides={"username": "night-watch"}, message=MESSAGE)
    assert slack_channel.last["json"]["username"] == "night-watch"
    assert slack_channel.last["json"]["channel"] == "#ops"


def test_override_the_driver_refuses_is_a_failed_delivery_not_a_send(slack_channel):
    result = notification_channel_send(name="ops-slack", overrides={"events_url": "https://x.example"}, message=MESSAGE)
    assert result["deliveries"] == [
        {"channel": "slack", "ok": False, "detail": "invalid config: unknown option for driver slack: events_url"}
    ]
    assert slack_channel.requests == []


@pytest.mark.django_db
def test_unknown_channel_is_unavailable():
    with pytest.raises(ChannelUnavailable, match=r"^Notification channel not found: ops-slack$"):
        notification_channel_send(name="ops-slack", overrides={}, message=MESSAGE)


@pytest.mark.django_db
def test_inactive_channel_is_unavailable():
    notification_channel_create(name="old", driver="console", is_active=False)
    with pytest.raises(ChannelUnavailable, match=r"^Notification channel is inactive: old$"):
        notification_channel_send(name="old", overrides={}, message=MESSAGE)


def test_several_channels_are_all_notified_even_when_one_is_missing(slack_channel, monkeypatch):
    monkeypatch.setenv("OPS_HOOK_URL", slack_channel.url("/hook"))
    notification_channel_create(name="ops-hook", driver="webhook", config={"url_env": "OPS_HOOK_URL"})
    result = notification_channels_send(names=["ops-slack", "gone", "ops-hook"], overrides={}, message=MESSAGE)
    assert [r["path"] for r in slack_channel.requests] == [SLACK_TOKEN, "/hook"]
    assert (result["driver"], result["channels_attempted"], result["succeeded"], result["failed"]) == (
        "slack, webhook", 3, 2, 1,
    )
    assert [c["channel"] for c in result["channels"]] == ["ops-slack", "gone", "ops-hook"]
    assert result["channels"][1]["deliveries"] == [
        {"channel": "gone", "ok": False, "detail": "Notification channel not found: gone"}
    ]


def test_credential_header_next_to_a_channel_is_refused():
    assert notification_validate(config={"channel": "ops-hook", "headers": {"Authorization": "Bearer t"}}) == [
        "header Authorization looks like a credential and must not be written in the definition: "
        "put it in an environment variable and name it in headers_env"
    ]


# --- a driver that fails in a way it did not foresee ------------------------------


class BrokenDriver(Driver):
    """A driver with a bug: its exception's text holds the secret URL it was posting to."""

    name = "broken"

    def send(self, *, message, config):
        raise RuntimeError("cannot post to https://hooks.example/services/T0/B0/br0ken-t0k3n")


class OutOfTimeDriver(Driver):
    name = "out-of-time"

    def send(self, *, message, config):
        raise SoftTimeLimitExceeded()


def test_a_driver_raising_something_unexpected_is_a_clean_failed_delivery(monkeypatch, apps_log):
    monkeypatch.setitem(drivers._items, "broken", BrokenDriver)
    result = notification_send(driver="broken", config={}, message=Message("t", "b", "critical"))
    assert result["deliveries"] == [{"channel": "broken", "ok": False, "detail": "driver error (RuntimeError)"}]
    assert result["failed"] == 1
    assert [r.getMessage() for r in apps_log.records] == ["notify driver broken raised RuntimeError"]
    assert all(r.exc_info is None for r in apps_log.records)  # no traceback, which would quote the URL
    assert "br0ken-t0k3n" not in apps_log.text
    assert_not_in(result, "br0ken-t0k3n", "hooks.example")


def test_the_runs_time_limit_is_not_taken_for_a_failed_delivery(monkeypatch):
    monkeypatch.setitem(drivers._items, "out-of-time", OutOfTimeDriver)
    with pytest.raises(SoftTimeLimitExceeded):
        notification_send(driver="out-of-time", config={}, message=Message("t", "b", "critical"))
