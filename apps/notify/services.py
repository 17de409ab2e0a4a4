"""Notify services: validating notify configs, sending messages through drivers,
and the named notification channels a notify node can use instead of a driver."""
from __future__ import annotations

import logging
import re
from dataclasses import replace

from celery.exceptions import SoftTimeLimitExceeded

import apps.notify.drivers  # noqa: F401  (registers the drivers outside Django's app loading)
from apps.notify.base import Delivery, DeliveryError, Message, drivers
from apps.notify.message import channel_key
from apps.notify.models import NotificationChannel
from apps.notify.selectors import notification_channel_get
from apps.options import unknown_option_messages

# Keys of a notify node's config that belong to the node, not the driver. With
# `driver` (or neither form) the other keys are the driver's options, so Slack's
# own `channel` option stays usable; without it, `channel` / `channels` name
# NotificationChannel rows and the other keys override their options.
# A notify node's own keys (the node decides with notify_on / renotify_after whether to send at all).
NOTICE_NODE_KEYS = ("notify_on", "renotify_after")
DRIVER_NODE_KEYS = ("driver", "required", *NOTICE_NODE_KEYS)
CHANNEL_NODE_KEYS = ("channel", "channels", "required", *NOTICE_NODE_KEYS)
_CHANNEL_NAME = re.compile(r"[-a-zA-Z0-9_]+")

logger = logging.getLogger(__name__)


def uses_channels(config: dict) -> bool:
    """Whether a notify node's config names notification channels rather than a driver."""
    return "driver" not in config and ("channel" in config or "channels" in config)


def node_options(config: dict) -> dict:
    """The options a notify node passes on: to its driver, or over its channels' own."""
    node_keys = CHANNEL_NODE_KEYS if uses_channels(config) else DRIVER_NODE_KEYS
    return {k: v for k, v in config.items() if k not in node_keys}


class ChannelUnavailable(Exception):
    """A notification channel a node names does not exist or is inactive."""


def _is_channel_name(value: object) -> bool:
    return isinstance(value, str) and bool(_CHANNEL_NAME.fullmatch(value))


def notification_validate(*, config: dict) -> list[str]:
    """Problems with a notify node's config as messages; touches nothing.

    With ``driver`` (default console) the other options are the driver's and
    are checked in full. Without it, ``channel`` / ``channels`` name channels
    stored in the database, looked up only when the node runs: here their names
    must be well-formed, and options overriding the channels' own must be
    options of some driver and never inline secrets."""
    if not uses_channels(config):
        driver = config.get("driver", "console")
        if driver not in drivers:
            return [f"unknown driver: {driver}"]
        if "channels" in config:
            return ["use either driver or channels, not both (a channel sets its driver)"]
        return drivers.get(driver)().validate_config(node_options(config))

    messages = []
    if "channel" in config and "channels" in config:
        messages.append("use either channel or channels, not both")
    if "channel" in config and not _is_channel_name(config["channel"]):
        messages.append("channel must be the name of a notification channel (letters, digits, - and _)")
    if "channels" in config:
        names = config["channels"]
        if not (isinstance(names, list) and names and all(_is_channel_name(n) for n in names)):
            messages.append("channels must be a non-empty list of notification channel names")
        else:
            messages += [f"channels lists {n} more than once" for n in sorted({n for n in names if names.count(n) > 1})]
    # The channels' drivers are unknown here: every driver checks the overrides it
    # could receive for inline secrets, and an option no driver has is a typo.
    overrides = node_options(config)
    known: set[str] = set()
    for _, driver in drivers.items():
        accepted = set(driver.options) | set(driver.secret_keys)
        known |= accepted
        for problem in driver().secret_problems({k: v for k, v in overrides.items() if k in accepted}):
            if problem not in messages:
                messages.append(problem)
    messages += unknown_option_messages(overrides, known, "notify channel")
    return messages


def notification_send(*, driver: str, config: dict, message: Message) -> dict:
    """Deliver ``message`` through ``driver`` with its ``config`` and summarise
    the deliveries. Never raises for a delivery problem: an unknown driver, an
    invalid config, a DeliveryError or any other exception the driver raises
    becomes one failed delivery (the latter named by its class only, and
    logged without a traceback: its text may hold a URL or a secret)."""
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
            except SoftTimeLimitExceeded:
                raise  # the run is out of time: the engine records it
            except Exception as exc:  # noqa: BLE001 - a driver bug must not put a URL or a token in a traceback
                logger.warning("notify driver %s raised %s", driver, type(exc).__name__)
                deliveries = [Delivery(driver, False, f"driver error ({type(exc).__name__})")]
    succeeded = sum(1 for d in deliveries if d.ok)
    return {
        "driver": driver,
        "channels_attempted": len(deliveries),
        "succeeded": succeeded,
        "failed": len(deliveries) - succeeded,
        "deliveries": [d.to_dict() for d in deliveries],
    }


def notification_channel_resolve(*, name: str, overrides: dict) -> tuple[str, dict]:
    """The driver of channel ``name`` and its config with ``overrides`` applied.

    Reads the database; raises ChannelUnavailable when the channel does not
    exist or is inactive."""
    channel = notification_channel_get(name=name)
    if channel is None:
        raise ChannelUnavailable(f"Notification channel not found: {name}")
    if not channel.is_active:
        raise ChannelUnavailable(f"Notification channel is inactive: {name}")
    return channel.driver, {**(channel.config or {}), **overrides}


def notification_channel_send(*, name: str, overrides: dict, message: Message) -> dict:
    """Deliver ``message`` through channel ``name`` (see notification_send); the
    summary also names the channel. Raises ChannelUnavailable."""
    driver, config = notification_channel_resolve(name=name, overrides=overrides)
    return {"channel": name, **notification_send(driver=driver, config=config, message=message)}


def notification_channels_send(*, names: list[str], overrides: dict, message: Message) -> dict:
    """Deliver ``message`` through each channel of ``names`` and summarise them all.

    Each channel's message has a key of its own (``<key>.<channel>``), so a
    receiver behind two of the channels does not drop the second as a repeat.
    Never raises: a missing or inactive channel is one failed delivery, and
    the other channels are still notified."""
    results = []
    for name in names:
        own = replace(message, key=channel_key(message.key, name))
        try:
            results.append(notification_channel_send(name=name, overrides=overrides, message=own))
        except ChannelUnavailable as exc:
            results.append(
                {
                    "channel": name,
                    "driver": "",
                    "channels_attempted": 1,
                    "succeeded": 0,
                    "failed": 1,
                    "deliveries": [Delivery(name, False, str(exc)).to_dict()],
                }
            )
    return {
        "driver": ", ".join(dict.fromkeys(r["driver"] for r in results if r["driver"])),
        "channels": results,
        "channels_attempted": sum(r["channels_attempted"] for r in results),
        "succeeded": sum(r["succeeded"] for r in results),
        "failed": sum(r["failed"] for r in results),
    }


def notification_channel_create(
    *, name: str, driver: str, config: dict | None = None, description: str = "", is_active: bool = True
) -> NotificationChannel:
    """Store a new channel. Raises django ValidationError for a bad name, an
    unknown driver or a config its driver refuses (inline secrets included)."""
    channel = NotificationChannel(
        name=name, driver=driver, config=config or {}, description=description, is_active=is_active
    )
    channel.full_clean()
    channel.save()
    return channel


def notification_channel_update(
    *,
    channel: NotificationChannel,
    driver: str | None = None,
    config: dict | None = None,
    description: str | None = None,
    is_active: bool | None = None,
) -> NotificationChannel:
    """Change the given fields of ``channel`` and save it; raises ValidationError as on create."""
    changes = (("driver", driver), ("config", config), ("description", description), ("is_active", is_active))
    for field, value in changes:
        if value is not None:
            setattr(channel, field, value)
    channel.full_clean()
    channel.save()
    return channel
