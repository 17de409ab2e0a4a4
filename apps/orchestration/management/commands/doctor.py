"""doctor: check, from where it runs, that this deployment can run pipelines."""
from django.core.management.base import CommandError

from apps.orchestration.doctor import CHECKS, FAIL, OK, WARN, doctor_run
from apps.orchestration.management.base import EXIT_BAD_INPUT, PipelineCommand


def _names(value: str | None, flag: str) -> list[str] | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in CHECKS]
    if unknown or not names:
        raise CommandError(
            f"{flag} takes check names among {', '.join(CHECKS)}, not {value!r}", returncode=EXIT_BAD_INPUT
        )
    return names


class Command(PipelineCommand):
    help = (
        "Check the database, broker, workers, beat, the environment variables the active definitions "
        "need, and OUTBOUND_ALLOW_HOSTS, from where it runs: one line per check; exit 0 when none fails."
    )
    # The checks report problems themselves; Django's system checks would stop the command before them.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--only", metavar="CHECKS", help=f"Comma-separated checks to run ({','.join(CHECKS)}).")
        parser.add_argument("--skip", metavar="CHECKS", help="Comma-separated checks to leave out.")

    def handle(self, *args, **options):
        findings = doctor_run(only=_names(options["only"], "--only"), skip=_names(options["skip"], "--skip"))
        style = {OK: self.style.SUCCESS, WARN: self.style.WARNING, FAIL: self.style.ERROR}
        for finding in findings:
            self.stdout.write(style[finding.status](finding.line))
        failed = [f.name for f in findings if f.status == FAIL]
        if failed:
            raise CommandError(f"doctor: {', '.join(failed)} failed", returncode=1)
