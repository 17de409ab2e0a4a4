"""show_run: show a run by id, optionally waiting for it to finish."""
from django.core.management.base import CommandError

from apps.orchestration.exit_codes import EXIT_BAD_INPUT
from apps.orchestration.management.base import PipelineCommand, seconds_option
from apps.orchestration.management.output import RunOutputMixin, RunProgress
from apps.orchestration.selectors import pipeline_run_get


class Command(RunOutputMixin, PipelineCommand):
    help = (
        "Show a pipeline run by its id. Exit codes as run_pipeline's; a queued or running run is shown as far "
        "as it has gone, exit 3."
    )

    def add_arguments(self, parser):
        parser.add_argument("run_id", type=int, help="The run's id (the Run ID of run_pipeline).")
        parser.add_argument("--wait", action="store_true", help="Wait until the run is finished.")
        parser.add_argument(
            "--follow", action="store_true", help="As --wait, and print a line on stderr as each node starts and ends."
        )
        parser.add_argument("--timeout", type=float, help="With --wait: give up after this many seconds (exit 3).")
        parser.add_argument("--json", action="store_true", help="Print the run record as JSON.")
        parser.add_argument(
            "--logs",
            action="store_true",
            help="Also print the log lines kept with the run, after the display (with --follow: live, on stderr; "
            "with --json: as its 'logs' list).",
        )

    def handle(self, *args, **options):
        seconds_option(options["timeout"], "--timeout")
        run = pipeline_run_get(run_id=options["run_id"])
        if run is None:
            raise CommandError(f"Pipeline run not found: {options['run_id']}", returncode=EXIT_BAD_INPUT)
        logs = options["logs"]
        if (options["wait"] or options["follow"]) and not run.is_terminal:
            return self.wait_and_show(
                run.pk, timeout=options["timeout"], as_json=options["json"], follow=options["follow"], logs=logs
            )
        if options["follow"]:
            # A finished run: what each node did (and, with --logs, its lines).
            RunProgress(self.stderr.write, logs_of=run.pk if logs else None).row(run)
        if not run.is_terminal:
            return self.show_unfinished(run, as_json=options["json"], logs=logs)
        self.show(run, as_json=options["json"], logs=logs, logs_shown=options["follow"])
