"""What a launch is made of and how it can be refused: plain data, no I/O.

Every entry point (the CLI, a schedule's tick, a retry, the admin) builds a
LaunchRequest and hands it to apps.orchestration.launch; rendering reads
these types too, so they live apart from the services that act on them.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from apps.orchestration.models import PipelineDefinition, PipelineRun


class Refusal(Enum):
    """Why a launch or a run action was refused; each entry point says it in its own terms
    (the CLI as an exit code, apps.orchestration.exit_codes)."""

    BAD_INPUT = "bad_input"  # nothing was written: the request itself is wrong
    UNAVAILABLE = "unavailable"  # the broker could not be used
    NO_TARGET = "no_target"  # no live worker serves a host to run on
    NOT_FOUND = "not_found"  # the run an action names does not exist
    STATE = "state"  # the run's state does not allow the action (finished, or not yet; retried already)
    CONFLICT = "conflict"  # the request collides with another run (its idempotency key is that run's)


class LaunchError(Exception):
    """A launch (or a run action) refused, with ``refusal`` saying why;
    ``messages`` lists the problems one by one (the message alone when it
    is one problem; each validation message when a definition is invalid)."""

    def __init__(self, message: str, refusal: Refusal = Refusal.BAD_INPUT, *, messages: list[str] | None = None):
        super().__init__(message)
        self.refusal = refusal
        self.messages = messages if messages is not None else [message]


class AlreadyRetried(LaunchError):
    """A retry refused because the run has a retry already (``retry_id``, the
    newest): each entry point says how to retry it again all the same."""

    def __init__(self, run_id: int, retry_id: int):
        super().__init__(f"Run {run_id} was already retried as run {retry_id}", Refusal.STATE)
        self.run_id, self.retry_id = run_id, retry_id


class RunExists(Exception):
    """A run with the launch's idempotency key exists already: nothing was created."""

    def __init__(self, run: PipelineRun):
        super().__init__(f"Run {run.pk} already exists for idempotency key {run.idempotency_key}")
        self.run = run


@dataclass
class ResolvedDefinition:
    """A definition ready to run: its config and where it came from."""

    # The JSON as read: an object once definition_check has passed (a file may hold any JSON).
    config: Any
    kind: str  # "definition", "config" or "builtin"
    origin: str  # definition name, config file path, or "builtin"
    definition: PipelineDefinition | None = None


@dataclass
class Targets:
    """Where a launch's runs go: ``hosts`` names their hosts (an empty
    string: the shared queue); with ``fan_out`` each gets a run of its own,
    all sharing a group id. ``note`` says what the launcher decided for the
    user when it was not told (``auto`` found no host)."""

    hosts: list[str]
    fan_out: bool = False
    note: str | None = None
    live: bool = False  # the hosts are those live workers said they serve


@dataclass(frozen=True)
class LaunchRequest:
    """One run to launch: the definition, the payload and the labels the run
    keeps. Built by an entry point, carried unchanged to the run's row
    (``target_host`` and ``group_id`` are set per host when a launch fans out)."""

    resolved: ResolvedDefinition
    payload: dict[str, Any]
    source: str = "cli"
    environment: str = "development"
    trace_id: str | None = None
    trigger: str = "cli"  # a PipelineRun.Trigger value
    idempotency_key: str | None = None
    retry_of: PipelineRun | None = None
    retry_again: bool = False  # a retry of a run that has a retry already (--force)
    reused_results: dict[str, Any] = field(default_factory=dict)
    target_host: str = ""
    group_id: uuid.UUID | None = None
