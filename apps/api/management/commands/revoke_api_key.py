"""revoke_api_key: delete an API key; requests carrying it are refused from then on."""
from django.core.management.base import CommandError

from apps.api.keys import ApiKeyError, api_key_revoke
from apps.orchestration.management.base import PipelineCommand
from apps.orchestration.management.exit_codes import EXIT_BAD_INPUT


class Command(PipelineCommand):
    help = "Revoke (delete) the API key called NAME: requests carrying it get 401 from now on."

    def add_arguments(self, parser):
        parser.add_argument("name", help="The key's name (list_api_keys shows them).")

    def handle(self, *args, **options):
        try:
            api_key_revoke(name=options["name"])
        except ApiKeyError as exc:
            raise CommandError(str(exc), returncode=EXIT_BAD_INPUT) from None
        self.stdout.write(f"Revoked API key {options['name']!r}.")
