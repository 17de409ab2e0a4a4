"""What a launch is made from, read and checked: the definition (a stored
one, a JSON file, or the built-in pipeline), the payload, and the labels a
run keeps. Reads only; every function raises LaunchError for bad input."""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import IO

from django.conf import settings

from apps import jsondata
from apps.alerts.parsers.base import PayloadError
from apps.alerts.services import alert_sample
from apps.orchestration.builtin import BUILTIN_NAME, builtin_definition
from apps.orchestration.launchrequest import LaunchError, LaunchRequest, ResolvedDefinition
from apps.orchestration.models import PipelineRun
from apps.orchestration.schedules import SCHEDULE_KEY_PREFIX
from apps.orchestration.selectors import pipeline_definition_get
from apps.orchestration.validation import DEFINITION_NAME, validate_definition
from apps.text import printable

# Trace ids travel into logs, headers and other systems: printable ASCII, no spaces.
TRACE_ID = re.compile(r"[!-~]{1,64}")
# Labels stored with the run (PipelineRun.source / .environment hold 50 characters).
LABEL_MAX = 50
# PipelineRun.origin holds a config file's path.
CONFIG_PATH_MAX = 500
# Idempotency keys come from scripts and schedulers: printable ASCII, no spaces.
IDEMPOTENCY_KEY = re.compile(r"[!-~]{1,200}")
# The origin of a definition given inline (the API) starts so; a config file's is its path.
INLINE_ORIGIN_PREFIX = "api:"
# The payload file name that means standard input.
STDIN = "-"


def definition_resolve(
    *, name: str | None = None, config_path: str | None = None, notify_driver: str | None = None
) -> ResolvedDefinition:
    """Load the definition named ``name``, else the JSON file ``config_path``,
    else the built-in one (with ``notify_driver``, default console)."""
    if name is not None:
        # A name no definition can have is not looked up (some databases refuse such text).
        definition = pipeline_definition_get(name=name) if DEFINITION_NAME.fullmatch(name) else None
        if definition is None:
            raise LaunchError(f"Pipeline definition not found: {printable(name)}")
        if not definition.is_active:
            raise LaunchError(f"Pipeline definition is inactive: {name}")
        return ResolvedDefinition(definition.config, "definition", name, definition)
    if config_path is not None:
        if len(config_path) > CONFIG_PATH_MAX or printable(config_path) != config_path:
            raise LaunchError(
                f"Config path must be printable text of at most {CONFIG_PATH_MAX} characters: "
                f"{printable(config_path[:80])}{'…' if len(config_path) > 80 else ''}"
            )
        config = read_json_file(
            config_path, max_bytes=settings.DEFINITION_MAX_BYTES, limit_name="DEFINITION_MAX_BYTES"
        )
        return ResolvedDefinition(config, "config", config_path)
    return ResolvedDefinition(
        builtin_definition(notify_driver="console" if notify_driver is None else notify_driver), "builtin", BUILTIN_NAME
    )


def config_resolve(*, config: object) -> ResolvedDefinition:
    """A definition given inline (the API's ``config`` object), to be checked
    by definition_check like any other. Its origin is ``api:`` and the first
    16 hex digits of the SHA-256 of its canonical JSON, so the runs of one
    inline definition count together for max_concurrent, as those of one
    config file do."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return ResolvedDefinition(config, "config", f"{INLINE_ORIGIN_PREFIX}{digest[:16]}")


def read_json_file(path: str, what: str = "config file", *, max_bytes: int | None, limit_name: str = "") -> object:
    """The JSON in the regular file at ``path``.

    With ``max_bytes``, a file larger than that is refused before it is read
    (``limit_name`` is the setting the message names), and at most
    ``max_bytes`` + 1 bytes are ever read, so a file growing meanwhile is
    refused too. Raises LaunchError when the file is missing or not a regular
    file, too large, unreadable, or not JSON within apps.jsondata's limits."""
    shown = printable(path)
    try:
        if not Path(path).is_file():
            raise LaunchError(f"{what.capitalize()} not found: {shown}")
        # Non-blocking: a FIFO swapped in since the check cannot hold the open; fstat then refuses it.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with open(descriptor, "rb", closefd=True) as handle:
            status = os.fstat(handle.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise LaunchError(f"{what.capitalize()} not found: {shown}")
            if max_bytes is not None and status.st_size > max_bytes:
                raise _too_large(what, shown, max_bytes, limit_name)
            data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    except OSError as exc:
        raise LaunchError(f"Cannot read {what}: {shown} ({exc.strerror or exc})") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise _too_large(what, shown, max_bytes, limit_name)
    return _json_from_bytes(data, what, shown)


def read_json_stream(stream: IO | None, what: str, *, max_bytes: int, limit_name: str) -> object:
    """The JSON read from ``stream`` (standard input) to its end, at most
    ``max_bytes`` + 1 bytes of it. Raises LaunchError, with the messages
    read_json_file gives, when the stream is closed or unreadable, holds more
    than ``max_bytes`` bytes, or is not JSON within apps.jsondata's limits."""
    shown = "standard input"
    if stream is None:
        raise LaunchError(f"Cannot read {what}: {shown} (closed)")
    try:
        data = stream.read(max_bytes + 1)
    except (OSError, ValueError) as exc:  # ValueError: a closed stream
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise LaunchError(f"Cannot read {what}: {shown} ({reason})") from None
    if isinstance(data, str):  # a text stream handed over by a caller
        data = data.encode("utf-8", "surrogatepass")
    if len(data) > max_bytes:
        raise _too_large(what, shown, max_bytes, limit_name)
    return _json_from_bytes(data, what, shown)


def _too_large(what: str, shown: str, max_bytes: int, limit_name: str) -> LaunchError:
    return LaunchError(f"{what.capitalize()} is larger than {max_bytes} bytes ({limit_name}): {shown}")


def _json_from_bytes(data: bytes, what: str, shown: str) -> object:
    """``data`` (UTF-8) parsed by apps.jsondata; LaunchError naming ``what`` otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LaunchError(f"Cannot read {what}: {shown} ({exc})") from None
    try:
        return jsondata.loads(text)
    except jsondata.JsonInputError as exc:
        raise LaunchError(f"Invalid JSON in {what}: {exc}") from None


def definition_check(*, resolved: ResolvedDefinition) -> None:
    """Raise LaunchError listing every validation message when the definition is invalid."""
    messages = validate_definition(resolved.config)
    if messages:
        # One line per message, whatever the definition's text holds.
        shown = [printable(m) for m in messages]
        raise LaunchError("Pipeline definition invalid:\n" + "\n".join(f"  - {m}" for m in shown), messages=shown)


def payload_resolve(
    *,
    payload: str | None = None,
    payload_file: str | None = None,
    stdin: IO | None = None,
    sample: bool = False,
    source: str = "cli",
) -> dict:
    """The run's payload from the JSON text ``payload``, else the file
    ``payload_file`` (``-``: the stream ``stdin``, to its end), else (with
    ``sample``) a sample alert of ``source``; empty when none is given. A
    file or stream holds at most PAYLOAD_MAX_BYTES. Raises LaunchError."""
    if payload is not None:
        try:
            data = jsondata.loads(payload)
        except jsondata.JsonInputError as exc:
            raise LaunchError(f"Invalid JSON payload: {exc}") from None
    elif payload_file == STDIN:
        data = read_json_stream(
            stdin, "payload file", max_bytes=settings.PAYLOAD_MAX_BYTES, limit_name="PAYLOAD_MAX_BYTES"
        )
    elif payload_file is not None:
        data = read_json_file(
            payload_file, "payload file", max_bytes=settings.PAYLOAD_MAX_BYTES, limit_name="PAYLOAD_MAX_BYTES"
        )
    elif sample:
        try:
            data = alert_sample(source=source)
        except PayloadError as exc:
            raise LaunchError(printable(str(exc))) from None
    else:
        data = {}
    if not isinstance(data, dict):
        raise LaunchError(f"Payload must be a JSON object, not {type(data).__name__}")
    return data


def launch_check(*, request: LaunchRequest) -> None:
    """Raise LaunchError when a run could not store the request's values as
    given (payload_check; short printable labels; a trace id and an
    idempotency key of printable ASCII), or when it takes a key of the
    scheduler's without being a scheduled run. The same rule holds on every database."""
    payload_check(request.payload)
    for flag, value in (("--source", request.source), ("--environment", request.environment)):
        if not (isinstance(value, str) and 0 < len(value) <= LABEL_MAX and value.isprintable()):
            raise LaunchError(f"{flag} must be 1 to {LABEL_MAX} printable characters")
    trace_id_check(request.trace_id)
    idempotency_key = request.idempotency_key
    if idempotency_key is not None and not (
        isinstance(idempotency_key, str) and IDEMPOTENCY_KEY.fullmatch(idempotency_key)
    ):
        raise LaunchError("--idempotency-key must be 1 to 200 printable ASCII characters without spaces")
    if (idempotency_key is not None and idempotency_key.startswith(SCHEDULE_KEY_PREFIX)
            and request.trigger != PipelineRun.Trigger.SCHEDULE):
        # Taken before its tick fires, such a key would make the tick return that run instead.
        raise LaunchError(
            f"--idempotency-key must not start with {SCHEDULE_KEY_PREFIX!r}: those keys are the scheduler's"
        )


def payload_check(payload: object, *, what: str = "Payload") -> dict:
    """``payload``, checked to be a JSON object a run can store: within
    apps.jsondata's limits and RUN_MAX_PAYLOAD_BYTES; raises LaunchError
    otherwise. ``what`` names it in the message ("Alert payload" for the
    alert intake, which makes the check first, for the whole notification)."""
    if not isinstance(payload, dict):
        raise LaunchError(f"{what} must be a JSON object, not {type(payload).__name__}")
    problems = jsondata.problems(payload, limit=1)
    if problems:
        raise LaunchError(f"Invalid payload: {problems[0]}")
    limit = settings.RUN_MAX_PAYLOAD_BYTES
    size = jsondata.encoded_size(payload)
    if size > limit:
        raise LaunchError(f"Payload is larger than {limit} bytes (RUN_MAX_PAYLOAD_BYTES): {size} bytes as JSON")
    return payload


def trace_id_check(trace_id: object) -> None:
    """Raise LaunchError when ``trace_id`` is given and is not 1 to 64
    printable ASCII characters without spaces."""
    if trace_id is not None and not (isinstance(trace_id, str) and TRACE_ID.fullmatch(trace_id)):
        raise LaunchError("--trace-id must be 1 to 64 printable ASCII characters without spaces")
