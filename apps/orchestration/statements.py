"""What the statements every run executes share: the run's INSERT (here),
the claim, its read and the fenced writes (apps/orchestration/lease.py).

The ORM took longer to build such a statement (about 250 µs for a fenced
UPDATE, 300 µs for the run's INSERT) than the database to execute it, so
these are written out once per database and only their parameters change.
On PostgreSQL they bind their parameters on the server and are prepared
(DB_PREPARE_THRESHOLD in the settings): parsing and planning cost the
database more than executing them. Django's own cursors bind on the client
and never prepare.
"""
from __future__ import annotations

from datetime import timedelta

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from django.db.models import Model
from django.db.models.functions import Now


def thread_db():
    """This thread's connection to the default database. The ``connection``
    proxy looks it up again on every attribute: hot paths take it once."""
    return connections[DEFAULT_DB_ALIAS]


class DbTime:
    """The database's time when a statement runs, plus ``seconds``: a value of a fenced write."""

    def __init__(self, seconds: float = 0.0):
        self.seconds = seconds

    def expression(self):
        return Now() + timedelta(seconds=self.seconds) if self.seconds else Now()

    def sql(self, vendor: str) -> tuple[str, list] | None:
        """SQL and parameters on a ``vendor`` database, as Django writes Now() (so
        stored times compare as before) plus the seconds; None on a database
        other than these two."""
        if vendor == "postgresql":
            if not self.seconds:
                return "STATEMENT_TIMESTAMP()", []
            return "(STATEMENT_TIMESTAMP() + %s)", [timedelta(seconds=self.seconds)]
        if vendor == "sqlite":
            if not self.seconds:
                return "STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'NOW')", []
            return "STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'NOW', %s)", [f"{self.seconds:+f} seconds"]
        return None


def statement_cursor():
    """A cursor for these statements. On PostgreSQL it binds parameters on the
    server, so each statement's shape is prepared once it has run
    DB_PREPARE_THRESHOLD times on the connection. Elsewhere it is Django's cursor."""
    db = thread_db()
    if db.vendor != "postgresql":
        return db.cursor()
    from django.db.backends.postgresql.base import TIMESTAMPTZ_OID, ServerBindingCursor, register_tzloader
    from psycopg.pq import Format

    db.close_if_health_check_failed()
    db.ensure_connection()
    with db.wrap_database_errors:
        raw = db.connection
        cursor = ServerBindingCursor(raw)
        # As Django's own cursors do: read times in the connection's time zone.
        if db.timezone != raw.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT).timezone:
            register_tzloader(db.timezone, cursor)
        db.validate_thread_sharing()
        return _LoggedStatements(cursor, db) if db.queries_logged else db.make_cursor(cursor)


class _LoggedStatements(CursorDebugWrapper):
    """Logs (DEBUG, captured queries) a server-bound statement with its parameters
    written in, as Django's client-bound cursors show theirs: a prepared
    statement's own text holds only placeholders."""

    def execute(self, sql, params=None):
        with self.debug_sql(self.db.ops.compose_sql(sql, params) if params else sql, params):
            return CursorWrapper.execute(self, sql, params)


# Per (database, model, fields written as the database's time): the INSERT and its value fields.
_INSERTS: dict = {}


def row_insert(obj: Model, *, db_time: tuple[str, ...] = ()) -> None:
    """INSERT ``obj`` (a new instance: its fields' defaults and auto_now_add
    values are taken as the ORM's save() takes them) and set its primary key.
    The fields named in ``db_time`` get the database's time of the statement.
    Like a save() outside a transaction, it commits on its own. Raises what
    the database raises (IntegrityError...)."""
    db = thread_db()
    meta = type(obj)._meta
    key = (db.alias, meta.label, db_time)
    insert = _INSERTS.get(key)
    if insert is None:
        quote = db.ops.quote_name
        fields = [f for f in meta.concrete_fields if not f.primary_key and f.name not in db_time]
        timed = [meta.get_field(name) for name in db_time]
        now = [DbTime().sql(db.vendor) for _ in timed]
        if any(written is None for written in now):
            raise RuntimeError(f"no SQL for the database's time on {db.vendor}")
        columns = ", ".join(quote(f.column) for f in [*fields, *timed])
        values = ", ".join(["%s"] * len(fields) + [sql for sql, _ in now])
        sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({values}) RETURNING {quote(meta.pk.column)}"
        insert = _INSERTS[key] = (sql, fields, timed)
    sql, fields, timed = insert
    params = [f.get_db_prep_save(f.pre_save(obj, True), connection=db) for f in fields]
    with statement_cursor() as cursor:
        cursor.execute(sql, params)
        obj.pk = cursor.fetchone()[0]
    obj._state.adding, obj._state.db = False, db.alias
    # As the row holds them: the database's time is not known here, so it is left to a read.
    for field in timed:
        obj.__dict__.pop(field.attname, None)
