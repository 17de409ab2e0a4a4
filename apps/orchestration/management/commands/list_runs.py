"""list_runs: the run history, newest first."""
import json

from django.core.management.base import CommandError

from apps.orchestration import listings
from apps.orchestration.exit_codes import EXIT_BAD_INPUT
from apps.orchestration.management.base import PipelineCommand
from apps.orchestration.models import PipelineRun
from apps.orchestration.runqueries import FilterError, limit_read, run_filters_read
from apps.orchestration.selectors import RUN_LIST_MAX, pipeline_runs_list


class Command(PipelineCommand):
    help = "List pipeline runs, newest first, as a table or JSON."

    def add_arguments(self, parser):
        parser.add_argument("--definition", help="Only runs of this stored definition (by name).")
        parser.add_argument("--status", choices=PipelineRun.Status.values, help="Only runs with this status.")
        parser.add_argument("--trigger", choices=PipelineRun.Trigger.values, help="Only runs launched this way.")
        parser.add_argument("--since", help="Only runs created within this long: 30s, 15m, 2h, 7d.")
        parser.add_argument("--host", help="Only runs targeting this host.")
        parser.add_argument(
            "--limit", type=int, default=20, help=f"At most this many runs, 1 to {RUN_LIST_MAX} (default 20)."
        )
        parser.add_argument("--json", action="store_true", help="Print a JSON array of run records.")

    def handle(self, *args, **options):
        try:
            filters = run_filters_read(
                definition=options["definition"],
                status=options["status"],
                trigger=options["trigger"],
                since=options["since"],
                host=options["host"],
            )
            limit = limit_read(options["limit"], most=RUN_LIST_MAX)
        except FilterError as exc:
            raise CommandError(str(exc), returncode=EXIT_BAD_INPUT) from None
        rows = pipeline_runs_list(
            definition=filters.definition,
            status=filters.status,
            trigger=filters.trigger,
            since=filters.since,
            host=filters.host,
            limit=limit,
        )
        if options["json"]:
            self.stdout.write(json.dumps([listings.run_listing_dict(row) for row in rows], indent=2))
        else:
            self.stdout.write(listings.render_runs_table(rows))
