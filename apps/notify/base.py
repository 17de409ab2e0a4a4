"""The notify family: drivers that deliver a message to people."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from apps.options import unknown_option_messages
from apps.registry import Registry
from apps.secrets import inline_secret_messages, secret_env_name

# What kind of notice a message is: "" a plain notification (one per run, as without
# notify_on), "problem" a new problem or a change of severity, "reminder" a problem
# that still lasts, "resolved" back to ok after a problem.
NOTICES = ("", "problem", "reminder", "resolved")
# How drivers name each kind of notice to people.
NOTICE_LABELS = {"problem": "Problem", "reminder": "Reminder", "resolved": "Resolved"}

@dataclass
class Message:
    """A notification built from what a run found.

    ``key`` names this notification for receivers that drop repeats: the same
    on every attempt and every redelivery of one node in one run (see
    apps.notify.message.notification_key), "" when it was not sent by a run's
    node; drivers then send no key. ``notice`` is one of NOTICES: drivers
    show a problem, a reminder or a resolved notice as such, and a plain
    one ("") as they always have.

    Raises ValueError for a notice not in NOTICES."""

    title: str
    body: str
    severity: str
    data: dict = field(default_factory=dict)
    key: str = ""
    notice: str = ""

    def __post_init__(self) -> None:
        if self.notice not in NOTICES:
            raise ValueError(f"unknown notice: {self.notice!r} (one of {', '.join(repr(n) for n in NOTICES)})")


@dataclass
class Delivery:
    """The outcome of delivering to one channel. ``detail`` never holds a secret."""

    channel: str
    ok: bool
    detail: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class DeliveryError(Exception):
    """Raised by a driver when a channel cannot be reached or configured."""


class Driver:
    """Base class of a notify driver. ``send`` returns one Delivery per channel
    attempted; ``validate_config`` reports config problems as messages (values
    that may come from the worker's environment are checked at send time)."""

    name: str = ""
    # The options the driver accepts, and the secrets it refuses inline: a secret
    # ``key`` is read from the variable its ``<key>_env`` option names.
    options: frozenset[str] = frozenset()
    secret_keys: tuple[str, ...] = ()
    # The conventional variable read for a secret key when the config names none (SLACK_WEBHOOK_URL...).
    default_env: dict[str, str] = {}

    def validate_config(self, config: dict) -> list[str]:
        return self.unknown_option_problems(config)

    def unknown_option_problems(self, config: dict) -> list[str]:
        """Messages for keys of ``config`` that are neither options nor secrets of the driver."""
        return unknown_option_messages(config, self.options | set(self.secret_keys), f"driver {self.name}")

    def secret_problems(self, config: dict) -> list[str]:
        """Messages for secrets written inline in ``config`` (a subset of validate_config's)."""
        return inline_secret_messages(config, self.secret_keys)

    def required_env(self, config: dict) -> list[str]:
        """The environment variables a node with ``config`` needs in the worker that sends:
        each secret's ``<key>_env`` or its conventional variable. Pure."""
        names = (secret_env_name(config, key, default_env=self.default_env.get(key)) for key in self.secret_keys)
        return [name for name in names if isinstance(name, str) and name]

    def send(self, *, message: Message, config: dict) -> list[Delivery]:
        raise NotImplementedError


drivers: Registry[type[Driver]] = Registry("notify driver")


def channel_config_validate(*, driver: object, config: object) -> dict[str, list[str]]:
    """Problems with a channel's ``driver`` and ``config``, keyed by field (empty when valid)."""
    if not isinstance(driver, str) or driver not in drivers:
        return {"driver": [f"unknown driver: {driver}"]}
    if not isinstance(config, dict):
        return {"config": ["config must be an object"]}
    messages = drivers.get(driver)().validate_config(config)
    return {"config": messages} if messages else {}
