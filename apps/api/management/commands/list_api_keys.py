"""list_api_keys: the API keys' names, scopes and use; never a key or its hash."""
import json

from apps.api.keys import api_keys_list
from apps.orchestration.listings import render_table
from apps.orchestration.management.base import PipelineCommand
from apps.orchestration.rendering import iso
from apps.text import printable


class Command(PipelineCommand):
    help = "List the API keys: name, public prefix, scopes, when created and last used (never the key itself)."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print a JSON array of keys.")

    def handle(self, *args, **options):
        keys = api_keys_list()
        if options["json"]:
            self.stdout.write(json.dumps([
                {
                    "name": key.name, "prefix": key.prefix, "scopes": key.scopes,
                    "created_at": iso(key.created_at), "last_used_at": iso(key.last_used_at),
                }
                for key in keys
            ], indent=2))
            return
        if not keys:
            self.stdout.write("No API keys.")
            return
        rows = [
            [printable(key.name), key.prefix, " ".join(key.scopes), iso(key.created_at) or "-",
             iso(key.last_used_at) or "never"]
            for key in keys
        ]
        self.stdout.write(render_table(["NAME", "PREFIX", "SCOPES", "CREATED (UTC)", "LAST USED (UTC)"], rows))
