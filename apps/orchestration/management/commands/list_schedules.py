"""list_schedules: the pipeline schedules beat fires, and when."""
import json

from django.utils import timezone

from apps.orchestration.listings import render_schedules_table, schedule_listing_dict
from apps.orchestration.management.base import PipelineCommand
from apps.orchestration.selectors import pipeline_schedules_list


class Command(PipelineCommand):
    help = (
        "List the pipeline schedules in beat's table (enabled or not): schedule, time zone, overlap "
        "policy, the last scheduled run and when the next one is due."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print a JSON array of schedules.")

    def handle(self, *args, **options):
        now = timezone.now()
        listings = pipeline_schedules_list(now=now)
        if options["json"]:
            self.stdout.write(json.dumps([schedule_listing_dict(item) for item in listings], indent=2))
        else:
            self.stdout.write(render_schedules_table(listings, now=now))
