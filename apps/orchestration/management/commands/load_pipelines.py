"""load_pipelines: store the shipped pipeline definitions (idempotent)."""
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError

from apps.orchestration.launchrequest import LaunchError
from apps.orchestration.loading import definitions_load
from apps.orchestration.management.base import PipelineCommand, launch_refused
from apps.text import printable


class Command(PipelineCommand):
    help = "Validate and store every pipelines/*.json definition; invalid files are refused."

    def add_arguments(self, parser):
        parser.add_argument(
            "--dir", default=None, help=f"Folder of definitions (default: {settings.PIPELINES_DIR})."
        )

    def handle(self, *args, **options):
        if options["dir"] == "":
            raise CommandError("--dir must name a folder", returncode=2)
        folder = Path(options["dir"] or settings.PIPELINES_DIR)
        try:
            report = definitions_load(folder=folder)
        except LaunchError as exc:
            raise launch_refused(exc) from exc
        for name, action in report.loaded:
            self.stdout.write(f"{action}: {name}")
        for name, change in report.schedules:
            self.stdout.write(f"{name}: {printable(change)}")
        for path, messages in report.refused:
            self.stderr.write(f"refused: {printable(path)}")
            for message in messages:
                self.stderr.write(f"  - {printable(message)}")
        self.stdout.write(
            f"{len(report.loaded)} loaded, {len(report.refused)} refused"
        )
        if report.refused:
            raise CommandError(
                f"{len(report.refused)} definition file(s) refused", returncode=2
            )
