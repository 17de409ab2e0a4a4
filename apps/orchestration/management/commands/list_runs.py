"""list_runs: the run history, newest first."""
import json

from django.core.management.base import CommandError
from django.utils import timezone

from apps.hostnames import HOST_NAME_RULE, host_name
from apps.orchestration import listings
from apps.orchestration.management.base import PipelineCommand, duration_option
from apps.orchestration.management.exit_codes import EXIT_BAD_INPUT
from apps.orchestration.models import PipelineRun
from apps.orchestration.selectors import RUN_LIST_MAX, pipeline_runs_list
from apps.orchestration.validation import DEFINITION_NAME


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
        name = options["definition"]
        # A name no definition can have is not looked up (some databases refuse such text).
        if name is not None and not DEFINITION_NAME.fullmatch(name):
            raise CommandError(
                "--definition must be a definition name: letters, digits, '-' and '_', at most 100",
                returncode=EXIT_BAD_INPUT,
            )
        host = options["host"]
        if host is not None and host_name(host) is None:
            raise CommandError(f"--host must be a host name ({HOST_NAME_RULE})", returncode=EXIT_BAD_INPUT)
        if not 1 <= options["limit"] <= RUN_LIST_MAX:
            raise CommandError(f"--limit must be from 1 to {RUN_LIST_MAX}", returncode=EXIT_BAD_INPUT)
        since = duration_option(options["since"], "--since")
        rows = pipeline_runs_list(
            definition=name,
            status=options["status"],
            trigger=options["trigger"],
            since=timezone.now() - since if since else None,
            host=host_name(host) if host is not None else None,
            limit=options["limit"],
        )
        if options["json"]:
            self.stdout.write(json.dumps([listings.run_listing_dict(row) for row in rows], indent=2))
        else:
            self.stdout.write(listings.render_runs_table(rows))
