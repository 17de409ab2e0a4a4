"""create_api_key: a new API key, printed once; only its hash is stored."""
from django.core.management.base import CommandError

from apps.api.keys import ApiKeyError, api_key_create
from apps.api.models import SCOPES
from apps.orchestration.management.base import PipelineCommand
from apps.orchestration.management.exit_codes import EXIT_BAD_INPUT


class Command(PipelineCommand):
    help = (
        "Create an API key called NAME with the given scopes and print it once: it is stored only as a "
        "hash, so it cannot be shown again (revoke_api_key NAME and create another if it is lost)."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="A name for the key (who or what uses it), unique.")
        parser.add_argument(
            "--scope", action="extend", nargs="+", default=[], metavar="SCOPE",
            help=f"What the key may do, repeatable or several at once: {', '.join(SCOPES)}.",
        )

    def handle(self, *args, **options):
        try:
            row, key = api_key_create(name=options["name"], scopes=options["scope"])
        except ApiKeyError as exc:
            raise CommandError(str(exc), returncode=EXIT_BAD_INPUT) from None
        self.stdout.write(key)
        self.stderr.write(
            f"Created API key {row.name!r} (scopes: {', '.join(row.scopes)}). It is shown only this once; "
            "send it as Authorization: Bearer <key>."
        )
