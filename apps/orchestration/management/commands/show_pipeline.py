"""show_pipeline: one stored definition: its nodes, schedule, triggers and last runs."""
import json

from django.core.management.base import CommandError
from django.utils import timezone

from apps.orchestration.definition_listings import pipeline_detail_dict, render_pipeline
from apps.orchestration.exit_codes import EXIT_BAD_INPUT
from apps.orchestration.management.base import PipelineCommand
from apps.orchestration.rendering import dry_run_node_lines
from apps.orchestration.selectors import (
    pipeline_definition_runs,
    pipeline_definitions_overview,
    pipeline_schedules_list,
)
from apps.text import printable

LAST_RUNS = 5


class Command(PipelineCommand):
    help = (
        "Show a stored pipeline definition: description, nodes (as the dry run lists them), schedule "
        f"(paused or enabled, next due), alert triggers and its last {LAST_RUNS} runs."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="The definition's name.")
        parser.add_argument("--json", action="store_true", help="Print the definition as JSON.")

    def handle(self, *args, **options):
        name = options["name"]
        rows = pipeline_definitions_overview(name=name)
        if not rows:
            raise CommandError(f"Pipeline definition not found: {printable(name)}", returncode=EXIT_BAD_INPUT)
        [row] = rows
        schedules = pipeline_schedules_list(now=timezone.now(), definition=name)
        schedule = schedules[0] if schedules else None
        runs = pipeline_definition_runs(name=name, limit=LAST_RUNS)
        if options["json"]:
            self.stdout.write(json.dumps(pipeline_detail_dict(row, schedule=schedule, runs=runs), indent=2))
            return
        listed = row["nodes"] if isinstance(row["nodes"], list) else []
        # A row edited behind validation's back: only the nodes the dry run can list.
        nodes = [node for node in listed if isinstance(node, dict) and "id" in node and "type" in node]
        self.stdout.write(render_pipeline(row, node_lines=dry_run_node_lines(nodes), schedule=schedule, runs=runs))
