"""Loading definitions from a folder of JSON files into the database, with
their schedules synced to beat's table."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction

from apps.orchestration.inputs import read_json_file
from apps.orchestration.launchrequest import LaunchError
from apps.orchestration.models import PipelineDefinition
from apps.orchestration.schedules import schedule_sync
from apps.orchestration.validation import DEFINITION_NAME, validate_definition
from apps.text import printable


@dataclass
class LoadReport:
    loaded: list  # (name, "created" | "updated" | "unchanged")
    refused: list  # (path, [messages])
    schedules: list  # (name, "schedule: every 300s" | "unscheduled"), only where it changed


def definitions_load(*, folder: Path) -> LoadReport:
    """Store each valid ``*.json`` definition in ``folder`` under its file name.

    Valid files are created or updated (unchanged ones are left alone), and
    each one's schedule is synced to beat's table (apps.orchestration.schedules);
    invalid ones are refused with their messages and change nothing.
    """
    try:
        paths = sorted(folder.glob("*.json")) if folder.is_dir() else None
    except OSError as exc:
        raise LaunchError(f"Cannot read the pipelines folder: {printable(str(folder))} ({exc.strerror})") from None
    if paths is None:
        raise LaunchError(f"Pipelines folder not found: {printable(str(folder))}")
    report = LoadReport(loaded=[], refused=[], schedules=[])
    for path in paths:
        if not DEFINITION_NAME.fullmatch(path.stem):
            report.refused.append(
                (str(path), ["the file name must be a definition name: letters, digits, '-' and '_', at most 100"])
            )
            continue
        try:
            config = read_json_file(
                str(path), max_bytes=settings.DEFINITION_MAX_BYTES, limit_name="DEFINITION_MAX_BYTES"
            )
        except LaunchError as exc:
            report.refused.append((str(path), [str(exc)]))
            continue
        messages = validate_definition(config)
        if messages or not isinstance(config, dict):  # not an object: validation said so
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
        with transaction.atomic():
            existing = PipelineDefinition.objects.filter(name=name).first()
            if existing is None:
                existing = PipelineDefinition.objects.create(name=name, **fields)
                report.loaded.append((name, "created"))
            elif all(getattr(existing, key) == value for key, value in fields.items()):
                report.loaded.append((name, "unchanged"))
            else:
                for key, value in fields.items():
                    setattr(existing, key, value)
                existing.save()
                report.loaded.append((name, "updated"))
            change = schedule_sync(definition=existing)
        if change:
            report.schedules.append((name, change))
    return report
