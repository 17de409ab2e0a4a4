"""The launcher: resolve a definition and a payload, validate, create the run, execute it.

Every function raises LaunchError (with the exit code the CLI should use)
for bad input, before anything is written.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from apps.alerts.parsers.base import PayloadError
from apps.alerts.services import alert_sample
from apps.orchestration import engine
from apps.orchestration.builtin import BUILTIN_NAME, builtin_definition
from apps.orchestration.models import PipelineDefinition, PipelineRun
from apps.orchestration.selectors import pipeline_definition_get
from apps.orchestration.validation import validate_definition

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_WAIT_GAVE_UP, EXIT_CANCELLED = 0, 1, 2, 3, 4


class LaunchError(Exception):
    """Bad input for a launch; ``exit_code`` follows the CLI's contract."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class ResolvedDefinition:
    """A definition ready to run: its config and where it came from."""

    config: dict
    kind: str  # "definition", "config" or "builtin"
    origin: str  # definition name, config file path, or "builtin"
    definition: PipelineDefinition | None = None


def definition_resolve(
    *, name: str | None = None, config_path: str | None = None, notify_driver: str | None = None
) -> ResolvedDefinition:
    """Load the definition named ``name``, the JSON file ``config_path``, or the built-in one."""
    if name and config_path:
        raise LaunchError("Cannot specify both --definition and --config")
    if notify_driver and (name or config_path):
        raise LaunchError("--notify-driver applies only to the built-in pipeline")
    if name:
        definition = pipeline_definition_get(name=name)
        if definition is None:
            raise LaunchError(f"Pipeline definition not found: {name}")
        if not definition.is_active:
            raise LaunchError(f"Pipeline definition is inactive: {name}")
        return ResolvedDefinition(definition.config, "definition", name, definition)
    if config_path:
        return ResolvedDefinition(_read_json_file(config_path), "config", config_path)
    return ResolvedDefinition(
        builtin_definition(notify_driver=notify_driver or "console"), "builtin", BUILTIN_NAME
    )


def _read_json_file(path: str) -> object:
    file = Path(path)
    if not file.is_file():
        raise LaunchError(f"Config file not found: {path}")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LaunchError(f"Cannot read config file: {path} ({exc})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LaunchError(f"Invalid JSON in config file: {exc}") from exc


def definition_check(*, resolved: ResolvedDefinition) -> None:
    """Raise LaunchError listing every validation message when the definition is invalid."""
    messages = validate_definition(resolved.config)
    if messages:
        raise LaunchError("Pipeline definition invalid:\n" + "\n".join(f"  - {m}" for m in messages))


def payload_resolve(
    *, payload: str | None = None, payload_file: str | None = None, sample: bool = False, source: str = "cli"
) -> dict:
    """The run's payload from ``--payload``, ``--file`` or ``--sample`` (empty when none is given)."""
    given = [flag for flag, value in (("--payload", payload), ("--file", payload_file), ("--sample", sample)) if value]
    if len(given) > 1:
        raise LaunchError(f"Cannot specify more than one of {', '.join(given)}")
    if payload is not None:
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise LaunchError(f"Invalid JSON payload: {exc}") from exc
    elif payload_file is not None:
        file = Path(payload_file)
        if not file.is_file():
            raise LaunchError(f"Payload file not found: {payload_file}")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise LaunchError(f"Cannot read payload file: {payload_file} ({exc})") from exc
        except json.JSONDecodeError as exc:
            raise LaunchError(f"Invalid JSON in payload file: {exc}") from exc
    elif sample:
        try:
            data = alert_sample(source=source)
        except PayloadError as exc:
            raise LaunchError(str(exc)) from exc
    else:
        data = {}
    if not isinstance(data, dict):
        raise LaunchError(f"Payload must be a JSON object, not {type(data).__name__}")
    return data


def pipeline_run_create(
    *,
    resolved: ResolvedDefinition,
    payload: dict,
    source: str = "cli",
    environment: str = "development",
    trace_id: str | None = None,
) -> PipelineRun:
    """Validate ``resolved`` and store a queued run holding a snapshot of it and the payload."""
    definition_check(resolved=resolved)
    with transaction.atomic():
        return PipelineRun.objects.create(
            trace_id=trace_id or str(uuid.uuid4()),
            definition=resolved.definition,
            definition_name=resolved.origin if resolved.kind != "config" else "",
            origin=resolved.origin,
            origin_kind=resolved.kind,
            config_snapshot=resolved.config,
            source=source,
            environment=environment,
            payload=payload,
        )


def pipeline_run_execute(*, run_id: int) -> PipelineRun | None:
    """Execute the run in this process; returns it in its terminal state."""
    return engine.run_execute(run_id=run_id)


def exit_code_for(run: PipelineRun) -> int:
    """The CLI exit code a run in this state stands for."""
    return {
        PipelineRun.Status.COMPLETED: EXIT_OK,
        PipelineRun.Status.FAILED: EXIT_FAILED,
        PipelineRun.Status.CANCELLED: EXIT_CANCELLED,
    }.get(run.status, EXIT_WAIT_GAVE_UP)


@dataclass
class LoadReport:
    loaded: list  # (name, "created" | "updated" | "unchanged")
    refused: list  # (path, [messages])


def definitions_load(*, folder: Path) -> LoadReport:
    """Store each valid ``*.json`` definition in ``folder`` under its file name.

    Valid files are created or updated (unchanged ones are left alone);
    invalid ones are refused with their messages and change nothing.
    """
    if not folder.is_dir():
        raise LaunchError(f"Pipelines folder not found: {folder}")
    report = LoadReport(loaded=[], refused=[])
    for path in sorted(folder.glob("*.json")):
        try:
            config = _read_json_file(str(path))
        except LaunchError as exc:
            report.refused.append((str(path), [str(exc)]))
            continue
        messages = validate_definition(config)
        if messages:
            report.refused.append((str(path), messages))
            continue
        fields = {
            "description": str(config.get("description", "")),
            "version": str(config["version"]),
            "tags": config.get("tags", []) if isinstance(config.get("tags"), list) else [],
            "config": config,
            "is_active": True,
        }
        name = path.stem
        existing = PipelineDefinition.objects.filter(name=name).first()
        if existing is None:
            PipelineDefinition.objects.create(name=name, **fields)
            report.loaded.append((name, "created"))
        elif all(getattr(existing, key) == value for key, value in fields.items()):
            report.loaded.append((name, "unchanged"))
        else:
            for key, value in fields.items():
                setattr(existing, key, value)
            existing.save()
            report.loaded.append((name, "updated"))
    return report
