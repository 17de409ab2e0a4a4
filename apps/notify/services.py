"""Notify services: validating driver configs and sending messages through drivers."""
from __future__ import annotations

import apps.notify.drivers  # noqa: F401  (registers the drivers outside Django's app loading)
from apps.notify.base import Delivery, DeliveryError, Message, drivers

# Keys of a notify node's config that belong to the node, not the driver.
NODE_KEYS = ("driver", "required")


def notification_validate(*, config: dict) -> list[str]:
    """Problems with a notify config (``driver`` defaults to console) as messages."""
    driver = config.get("driver", "console")
    if driver not in drivers:
        return [f"unknown driver: {driver}"]
    driver_config = {k: v for k, v in config.items() if k not in NODE_KEYS}
    return drivers.get(driver)().validate_config(driver_config)


def notification_send(*, driver: str, config: dict, message: Message) -> dict:
    """Deliver ``message`` through ``driver`` with its ``config`` and summarise
    the deliveries. Never raises for a delivery problem: an unknown driver, an
    invalid config or a DeliveryError becomes one failed delivery."""
    if driver not in drivers:
        deliveries = [Delivery(str(driver), False, f"unknown driver: {driver}")]
    else:
        instance = drivers.get(driver)()
        problems = instance.validate_config(config)
        if problems:
            deliveries = [Delivery(driver, False, "invalid config: " + "; ".join(problems))]
        else:
            try:
                deliveries = instance.send(message=message, config=config)
            except DeliveryError as exc:
                deliveries = [Delivery(driver, False, str(exc))]
    succeeded = sum(1 for d in deliveries if d.ok)
    return {
        "driver": driver,
        "channels_attempted": len(deliveries),
        "succeeded": succeeded,
        "failed": len(deliveries) - succeeded,
        "deliveries": [d.to_dict() for d in deliveries],
    }
