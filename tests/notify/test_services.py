"""Notify services: driver lookup and the delivery summary."""
from __future__ import annotations

from apps.notify.base import Message
from apps.notify.services import notification_send, notification_validate


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
