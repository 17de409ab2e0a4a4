"""The run store's INSERT of a run's log lines (apps/orchestration/runlogs.py),
which the fenced writes of store.py carry: many lines in one statement."""
from __future__ import annotations

import json

from django.db import DEFAULT_DB_ALIAS, connections, models

from apps.orchestration.models import RunLogLine

# A log line's columns, in the order of the tuples the engine's buffer keeps (runlogs.LogLine), after the run.
_LOG_COLUMNS = ("run", "seq", "logged_at", "level", "logger", "node_id", "message")
_LOG_INSERTS: dict = {}


def log_lines_insert_sql(run_id: int, lines: list, condition: str, condition_params: list) -> tuple[str, list]:
    """SQL and parameters inserting the run's log ``lines`` (runlogs.LogLine tuples) while
    the SQL ``condition`` holds: however many lines, one statement with one parameter
    holding them all (a JSON array), so a run's logging costs no statement per line. A
    line whose (run, seq) is stored already (a write repeated after a fault) is skipped."""
    db = connections[DEFAULT_DB_ALIAS]
    plan = _LOG_INSERTS.get(db.alias)
    if plan is None:
        quote = db.ops.quote_name
        fields = [field for name in _LOG_COLUMNS if isinstance(field := RunLogLine._meta.get_field(name), models.Field)]
        columns = ", ".join(quote(f.column) for f in fields)
        if db.vendor == "postgresql":
            values = ", ".join(f"(r ->> {i})::{f.db_type(db)}" for i, f in enumerate(fields))
            source = "jsonb_array_elements(%s::jsonb) AS r"
        else:
            values = ", ".join(f"JSON_EXTRACT(r.value, '$[{i}]')" for i in range(len(fields)))
            source = "JSON_EACH(%s) AS r"
        head = f"INSERT INTO {quote(RunLogLine._meta.db_table)} ({columns}) SELECT {values} FROM {source} WHERE "
        tail = f" ON CONFLICT ({quote('run_id')}, {quote('seq')}) DO NOTHING"
        plan = _LOG_INSERTS[db.alias] = (head, tail, db.ops.adapt_datetimefield_value)
    head, tail, adapt_time = plan

    def when(value) -> str:
        value = adapt_time(value)
        return value if isinstance(value, str) else value.isoformat()

    rows = [[run_id, seq, when(logged_at), level, name, node_id, message]
            for seq, logged_at, level, name, node_id, message in lines]
    return f"{head}{condition}{tail}", [json.dumps(rows), *condition_params]
