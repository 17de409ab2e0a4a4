"""create_api_key, list_api_keys, revoke_api_key: the key printed once and stored only as a
hash; bad input exits 2 with one line and stores nothing."""
import hashlib
import json
import logging
import re

import pytest
from django.db import connection

from apps.api.models import ApiKey

pytestmark = pytest.mark.django_db

KEY = re.compile(r"pl_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")


def every_stored_text() -> str:
    """Every column of every api key row, as the database holds it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM api_apikey")
        return repr(cursor.fetchall())


def test_create_prints_the_key_once_and_stores_only_its_hash(run_command, caplog):
    caplog.set_level(logging.DEBUG)
    result = run_command("create_api_key", "am", "--scope", "alerts", "--scope", "runs:read", "metrics")
    assert result.exit_code == 0
    key = result.stdout.strip()
    assert KEY.fullmatch(key)
    assert "Created API key 'am' (scopes: alerts, runs:read, metrics)" in result.stderr
    assert key not in result.stderr
    row = ApiKey.objects.get(name="am")
    assert row.scopes == ["alerts", "runs:read", "metrics"]
    assert row.prefix == key[3:11]
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    stored = every_stored_text()
    assert key not in stored and key[12:] not in stored
    assert key not in caplog.text and key[12:] not in caplog.text


def test_keys_are_random(run_command):
    first = run_command("create_api_key", "one", "--scope", "alerts").stdout.strip()
    second = run_command("create_api_key", "two", "--scope", "alerts").stdout.strip()
    assert first != second and first[3:11] != second[3:11]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x", "--scope", "admin"], "Unknown scope 'admin': choose from alerts, runs:read, runs:write, metrics"),
        (["x", "--scope", "alerts", "runs:delete"], "Unknown scope 'runs:delete': choose from alerts, runs:read, runs:write, metrics"),
        (["x"], "A key needs at least one scope: alerts, runs:read, runs:write, metrics"),
        (["bad name", "--scope", "alerts"], "A key's name is 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit"),
        (["nul\x00", "--scope", "alerts"], "A key's name is 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit"),
        (["a" * 101, "--scope", "alerts"], "A key's name is 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit"),
    ],
)
def test_bad_input_exits_2_and_stores_nothing(run_command, args, message):
    result = run_command("create_api_key", *args)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"CommandError: {message}"
    assert result.stdout == ""
    assert not ApiKey.objects.exists()


def test_an_existing_name_exits_2_and_keeps_the_key(run_command):
    run_command("create_api_key", "am", "--scope", "alerts")
    before = ApiKey.objects.get(name="am").key_hash
    result = run_command("create_api_key", "am", "--scope", "metrics")
    assert result.exit_code == 2
    assert "A key named 'am' already exists (revoke_api_key am first)" in result.stderr
    assert list(ApiKey.objects.values_list("key_hash", "scopes")) == [(before, ["alerts"])]


def test_list_shows_names_scopes_and_use_never_the_key(run_command, client):
    key = run_command("create_api_key", "reader", "--scope", "runs:read").stdout.strip()
    run_command("create_api_key", "am", "--scope", "alerts")
    client.get("/api/v1/definitions", headers={"Authorization": f"Bearer {key}"})
    listed = run_command("list_api_keys", "--json")
    assert listed.exit_code == 0
    rows = json.loads(listed.stdout)
    assert [row["name"] for row in rows] == ["am", "reader"]
    assert set(rows[0]) == {"name", "prefix", "scopes", "created_at", "last_used_at"}
    assert rows[0]["last_used_at"] is None and rows[1]["last_used_at"] is not None
    assert rows[1]["scopes"] == ["runs:read"] and rows[1]["prefix"] == key[3:11]
    table = run_command("list_api_keys")
    assert table.stdout.splitlines()[0].split() == ["NAME", "PREFIX", "SCOPES", "CREATED", "(UTC)", "LAST", "USED", "(UTC)"]
    assert "never" in table.stdout
    row_hash = ApiKey.objects.get(name="reader").key_hash
    for output in (listed.stdout, table.stdout):
        assert key not in output and key[12:] not in output and row_hash not in output


def test_list_with_no_keys(run_command):
    assert run_command("list_api_keys").stdout.strip() == "No API keys."
    assert json.loads(run_command("list_api_keys", "--json").stdout) == []


def test_revoke_deletes_the_key_and_an_unknown_name_exits_2(run_command, client):
    key = run_command("create_api_key", "old", "--scope", "runs:read").stdout.strip()
    result = run_command("revoke_api_key", "old")
    assert result.exit_code == 0 and result.stdout.strip() == "Revoked API key 'old'."
    assert not ApiKey.objects.exists()
    assert client.get("/api/v1/definitions", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    again = run_command("revoke_api_key", "old")
    assert again.exit_code == 2 and again.stderr.strip() == "CommandError: No API key named 'old'"


@pytest.mark.django_db(transaction=True)
def test_the_commands_exit_codes_in_a_real_process(manage):
    bad = manage("create_api_key", "x", "--scope", "root")
    assert bad.exit_code == 2
    assert bad.stderr.strip().splitlines()[-1] == "CommandError: Unknown scope 'root': choose from alerts, runs:read, runs:write, metrics"
    made = manage("create_api_key", "am", "--scope", "alerts")
    assert made.exit_code == 0 and KEY.fullmatch(made.stdout.strip())
    assert manage("revoke_api_key", "nobody").exit_code == 2
    assert manage("revoke_api_key", "am").exit_code == 0
