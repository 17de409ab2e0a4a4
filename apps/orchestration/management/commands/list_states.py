"""list_states: the monitoring state board, what each definition last found on each host."""
import json

from django.core.management.base import CommandError
from django.utils import timezone

from apps.orchestration.exit_codes import EXIT_BAD_INPUT
from apps.orchestration.listings import render_states_table, state_listing_dict
from apps.orchestration.management.base import PipelineCommand
from apps.orchestration.models import Severity
from apps.orchestration.runqueries import FilterError, limit_read
from apps.orchestration.selectors import STATE_LIST_MAX, monitor_states_list


class Command(PipelineCommand):
    help = (
        "List the monitoring state: per definition and host, the severity its last run found, since when, "
        "its last run and its last notice. Worst first, then the longest-lasting."
    )

    def add_arguments(self, parser):
        parser.add_argument("--definition", help="Only this definition ('config:<file name>' for a config file's).")
        parser.add_argument("--severity", choices=Severity.values, help="Only this severity.")
        parser.add_argument(
            "--limit", type=int, default=500, help=f"At most this many rows, 1 to {STATE_LIST_MAX} (default 500)."
        )
        parser.add_argument("--json", action="store_true", help="Print a JSON array of states.")

    def handle(self, *args, **options):
        try:
            limit = limit_read(options["limit"], most=STATE_LIST_MAX)
        except FilterError as exc:
            raise CommandError(str(exc), returncode=EXIT_BAD_INPUT) from None
        states = monitor_states_list(definition=options["definition"], severity=options["severity"], limit=limit)
        if options["json"]:
            self.stdout.write(json.dumps([state_listing_dict(state) for state in states], indent=2))
        else:
            self.stdout.write(render_states_table(states, now=timezone.now()))
