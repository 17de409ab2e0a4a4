"""run_schedule: launch a definition's schedule once now, as a tick of it would."""
from apps.orchestration.launchrequest import LaunchError
from apps.orchestration.management.base import PipelineCommand, launch_refused, seconds_option
from apps.orchestration.management.output import RunOutputMixin
from apps.orchestration.schedule_actions import pipeline_schedule_active_run, pipeline_schedule_run_now


class Command(RunOutputMixin, PipelineCommand):
    help = (
        "Launch one run of a definition's schedule now (trigger 'schedule', its payload and hosts), "
        "through the path a schedule tick takes: with overlap 'skip' nothing is launched while a "
        "scheduled run of it is queued or running (exit 0)."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="The definition's name.")
        parser.add_argument(
            "--wait", action="store_true", help="Wait for the run and show it (run_pipeline's exit codes)."
        )
        parser.add_argument("--timeout", type=float, help="With --wait: give up after this many seconds (exit 3).")
        parser.add_argument(
            "--json", action="store_true", help="Print the queued run (or, with --wait, the run) as JSON."
        )

    def handle(self, *args, **options):
        seconds_option(options["timeout"], "--timeout")
        try:
            runs = pipeline_schedule_run_now(name=options["name"])
        except LaunchError as exc:
            raise launch_refused(exc) from exc
        if not runs:
            active = pipeline_schedule_active_run(name=options["name"])
            which = f"run {active.pk} is still {active.status}" if active else "a scheduled run is still active"
            self.stdout.write(f"skipped: {which} (overlap: skip)")
            return
        if len(runs) > 1:
            if options["wait"]:
                return self.wait_and_show_group(runs, timeout=options["timeout"], as_json=options["json"])
            return self.show_queued_group(runs, as_json=options["json"])
        [run] = runs
        if run.is_terminal:  # the definition cannot run: the failed run says why
            return self.show(run, as_json=options["json"])
        if options["wait"]:
            return self.wait_and_show(run.pk, timeout=options["timeout"], as_json=options["json"])
        self.show_queued(run, as_json=options["json"])
