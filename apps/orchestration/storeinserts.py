"""The run store's INSERTs: a new row (the run's) in one statement, many (a
schedule herd's, a fan-out's) in a few. Written out once per database and
model, like the rest of the run store (store.py), whose helpers they use.

On PostgreSQL many rows travel as one parameter, a JSON array of rows whose
values are text, each cast to its column's type in the statement: a VALUES
list of a thousand rows has some 30,000 parameters, and the driver took
longer to rewrite its placeholders than the database to insert the rows
(about 0.15 s of CPU per thousand runs against 0.04 s). SQLite binds a
VALUES list's parameters cheaply, so it keeps one.

Django internals used here, as in store.py (tests/orchestration/test_store.py
fails loudly when they change): a field's ``pre_save`` and
``get_db_prep_save`` (the value the ORM's save() would write) and the
adapter ``connection.ops.adapt_json_value`` returns on PostgreSQL (psycopg's
``Jsonb``: its ``obj`` and ``dumps``).
"""
from __future__ import annotations

import json
from datetime import date, datetime
from typing import TypeVar

from django.db import models
from django.db.models import Model

from apps.orchestration.store import DbTime, _column, thread_db

# Per (database, model, fields written as the database's time): the INSERT and its value fields.
_INSERTS: dict[tuple[str, str, tuple[str, ...]], tuple[str, list[models.Field], list[models.Field]]] = {}


def _insert_plan(db, model: type[Model], db_time: tuple[str, ...]) -> tuple[str, list, list]:
    """The one-row INSERT of ``model`` on ``db`` (made once) and its value and time fields."""
    meta = model._meta
    key = (db.alias, meta.label, db_time)
    insert = _INSERTS.get(key)
    if insert is None:
        quote = db.ops.quote_name
        fields = [f for f in meta.concrete_fields if not f.primary_key and f.name not in db_time]
        timed = [_column(model, name) for name in db_time]
        now = [DbTime().sql(db.vendor) for _ in timed]
        if None in now:
            raise RuntimeError(f"no SQL for the database's time on {db.vendor}")
        columns = ", ".join(quote(f.column) for f in [*fields, *timed])
        values = ", ".join(["%s"] * len(fields) + [written[0] for written in now if written])
        sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({values}) RETURNING {quote(meta.pk.column)}"
        insert = _INSERTS[key] = (sql, fields, timed)
    return insert


def row_insert(obj: Model, *, db_time: tuple[str, ...] = ()) -> None:
    """INSERT ``obj`` (a new instance: its fields' defaults and auto_now_add
    values are taken as the ORM's save() takes them) and set its primary key.
    The fields named in ``db_time`` get the database's time of the statement.
    Like a save() outside a transaction, it commits on its own. Raises what
    the database raises (IntegrityError...)."""
    db = thread_db()
    sql, fields, timed = _insert_plan(db, type(obj), db_time)
    params = [f.get_db_prep_save(f.pre_save(obj, True), connection=db) for f in fields]
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        _inserted(obj, cursor.fetchone()[0], db, timed)


def _inserted(obj: Model, pk, db, timed: list) -> None:
    obj.pk, obj._state.adding, obj._state.db = pk, False, db.alias
    for field in timed:  # as the row holds them: the database's time is not known here, so left to a read
        obj.__dict__.pop(field.attname, None)


_M = TypeVar("_M", bound=Model)
ROWS_PER_INSERT = 500  # SQLite takes 32,766 parameters; a run's row has about 30


def rows_insert(objs: list[_M], *, unique: str, db_time: tuple[str, ...] = ()) -> list[_M]:
    """INSERT ``objs`` (new instances of one model, as row_insert takes them, each with its own
    value of the unique field ``unique``), ROWS_PER_INSERT rows per statement, skipping a row whose
    ``unique`` value is taken (ON CONFLICT DO NOTHING). Sets the primary keys; returns the objects
    inserted, in order. Raises what the database raises (ValueError for a value PostgreSQL's path
    cannot carry as text: bytes)."""
    db = thread_db()
    inserted: list[_M] = []
    for start in range(0, len(objs), ROWS_PER_INSERT):
        batch = objs[start:start + ROWS_PER_INSERT]
        model = type(batch[0])
        key = _column(model, unique)
        if db.vendor == "postgresql":
            sql, fields, timed = _json_insert(db, model, key, db_time)
            rows = [[_text(f.get_db_prep_save(f.pre_save(obj, True), connection=db)) for f in fields] for obj in batch]
            params: list = [json.dumps(rows)]
        else:
            one, fields, timed = _insert_plan(db, model, db_time)
            head, _, rest = one.partition(" VALUES ")
            slot, _, returning = rest.partition(" RETURNING ")
            column = db.ops.quote_name(key.column)
            sql = (f"{head} VALUES {', '.join([slot] * len(batch))} ON CONFLICT ({column}) DO NOTHING "
                   f"RETURNING {returning}, {column}")
            params = [f.get_db_prep_save(f.pre_save(obj, True), connection=db) for obj in batch for f in fields]
        with db.cursor() as cursor:
            cursor.execute(sql, params)
            by_key = {value: pk for pk, value in cursor.fetchall()}
        for obj in batch:
            if (pk := by_key.get(getattr(obj, key.attname))) is not None:
                _inserted(obj, pk, db, timed)
                inserted.append(obj)
    return inserted


def _json_insert(db, model: type[Model], key: models.Field, db_time: tuple[str, ...]) -> tuple[str, list, list]:
    """PostgreSQL's many-row INSERT of ``model`` (made once): its rows are the elements of one
    JSON array parameter, each an array of its fields' values as text (or null)."""
    plan_key = (db.alias, f"{model._meta.label}:json:{key.column}", db_time)
    insert = _INSERTS.get(plan_key)
    if insert is None:
        one, fields, timed = _insert_plan(db, model, db_time)
        head, _, rest = one.partition(" VALUES (")
        slots, _, returning = rest.partition(") RETURNING ")
        now = slots.split(", ")[len(fields):]  # the database's time, as the one-row INSERT writes it
        values = [f"(r ->> {i})::{f.db_type(db)}" for i, f in enumerate(fields)]
        column = db.ops.quote_name(key.column)
        sql = (f"{head} SELECT {', '.join(values + now)} FROM jsonb_array_elements(%s::jsonb) AS r "
               f"ON CONFLICT ({column}) DO NOTHING RETURNING {returning}, {column}")
        insert = _INSERTS[plan_key] = (sql, fields, timed)
    return insert


def _text(value) -> str | None:
    """A value as get_db_prep_save gives it for PostgreSQL, as the text its column's type reads."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        raise ValueError("a binary value cannot be inserted as text")
    if hasattr(value, "obj") and hasattr(value, "dumps"):  # psycopg's Jsonb, from connection.ops.adapt_json_value
        return (value.dumps or json.dumps)(value.obj)
    return str(value)
