"""run_pipeline: validate a pipeline definition, run it, and show what happened."""
import json

from django.core.management.base import BaseCommand, CommandError

from apps.orchestration import rendering, services
from apps.orchestration.services import EXIT_OK, LaunchError


class Command(BaseCommand):
    help = (
        "Run a pipeline: a stored definition (--definition), a JSON file (--config), "
        "or the built-in ingest -> check -> analyze -> notify pipeline. "
        "Exit codes: 0 completed, 1 failed, 2 bad input, 3 gave up waiting, 4 cancelled."
    )

    def add_arguments(self, parser):
        which = parser.add_argument_group("which pipeline")
        which.add_argument("--definition", help="Name of a PipelineDefinition in the database.")
        which.add_argument("--config", help="Path to a JSON file containing a pipeline definition.")
        which.add_argument(
            "--notify-driver",
            help="Notify driver of the built-in pipeline (default: console).",
        )
        data = parser.add_argument_group("payload (at most one)")
        data.add_argument("--payload", help="The payload as a JSON object.")
        data.add_argument("--file", help="Path to a JSON file holding the payload.")
        data.add_argument("--sample", action="store_true", help="Use a sample alert for --source.")
        parser.add_argument("--source", default="cli", help="Alert source (default: cli, which autodetects).")
        parser.add_argument("--environment", default="development", help="Environment name (default: development).")
        parser.add_argument("--trace-id", help="Trace id for the run (default: a new UUID).")
        parser.add_argument("--dry-run", action="store_true", help="Validate and show the plan; run nothing.")
        parser.add_argument("--json", action="store_true", help="Print the run record as JSON.")

    def handle(self, *args, **options):
        try:
            resolved = services.definition_resolve(
                name=options["definition"],
                config_path=options["config"],
                notify_driver=options["notify_driver"],
            )
            payload = services.payload_resolve(
                payload=options["payload"],
                payload_file=options["file"],
                sample=options["sample"],
                source=options["source"],
            )
            if options["dry_run"]:
                services.definition_check(resolved=resolved)
                self.stdout.write(
                    rendering.render_dry_run(
                        resolved=resolved,
                        payload=payload,
                        source=options["source"],
                        environment=options["environment"],
                    )
                )
                return
            run = services.pipeline_run_create(
                resolved=resolved,
                payload=payload,
                source=options["source"],
                environment=options["environment"],
                trace_id=options["trace_id"],
            )
        except LaunchError as exc:
            raise CommandError(str(exc), returncode=exc.exit_code) from exc

        run = services.pipeline_run_execute(run_id=run.pk)
        self._show(run, as_json=options["json"])

    def _show(self, run, *, as_json: bool) -> None:
        """Print the run and leave with its exit code."""
        code = services.exit_code_for(run)
        if as_json:
            self.stdout.write(json.dumps(rendering.run_as_dict(run), indent=2))
        else:
            head, last = rendering.render_result(run).rsplit("\n", 1)
            self.stdout.write(head + "\n")
            style = self.style.SUCCESS if code == EXIT_OK else self.style.ERROR
            self.stdout.write(style(last))
        if code != EXIT_OK:
            raise CommandError(f"Pipeline failed: {run.error}", returncode=code)
