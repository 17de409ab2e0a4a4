"""list_pipelines: the stored definitions, with their schedules, triggers and last runs."""
import json

from apps.orchestration.definition_listings import pipeline_listing_dict, render_pipelines_table
from apps.orchestration.management.base import PipelineCommand
from apps.orchestration.selectors import pipeline_definitions_overview


class Command(PipelineCommand):
    help = (
        "List the stored pipeline definitions by name: whether active, node count, schedule in words "
        "(paused or not), alert triggers, last run and description."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print a JSON array of definitions.")

    def handle(self, *args, **options):
        rows = pipeline_definitions_overview()
        if options["json"]:
            self.stdout.write(json.dumps([pipeline_listing_dict(row) for row in rows], indent=2))
        else:
            self.stdout.write(render_pipelines_table(rows))
