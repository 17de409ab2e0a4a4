"""Per-run log context: which run the code running now works for.

The context is a ``contextvars.ContextVar`` set when a run is executed (the
engine) and when a worker task for a run starts (workers/celery.py), and read
by one logging filter, ``RunContextFilter``, which stamps ``run_id`` and
``trace_id`` on every record emitted meanwhile: our own lines and the
libraries' (Celery's "Task ... succeeded" included). A record that names its
run itself (``extra={"run_id": ...}``) keeps its own ids, since a line may
concern another run than the one being executed (a wake-up sent to the next).

A context variable is not inherited by threads started with ``threading``
(Python 3.11): lines written from such threads (the heartbeat) pass their ids
in ``extra``.
"""
from __future__ import annotations

import ast
import contextvars
import logging
from contextlib import contextmanager
from dataclasses import dataclass

# Plain constants: the logging filter imports nothing from Django apps while logging is configured.
from apps.broker.names import EXECUTE_RUN_TASK


@dataclass(frozen=True)
class RunIds:
    run_id: int
    trace_id: str | None = None


_current: contextvars.ContextVar[RunIds | None] = contextvars.ContextVar("run_log_context", default=None)


def current() -> RunIds | None:
    """The run whose work is being done in this context, if any."""
    return _current.get()


def bind(run_id: int, trace_id: str | None = None) -> contextvars.Token:
    """Make run ``run_id`` the current run; returns the token ``unbind`` takes."""
    return _current.set(RunIds(run_id, trace_id))


def unbind(token: contextvars.Token) -> None:
    """Restore the context as it was before the ``bind`` that returned ``token``."""
    _current.reset(token)


@contextmanager
def run_context(run_id: int, trace_id: str | None = None):
    """Within the block, every log record carries ``run_id`` and ``trace_id``."""
    token = bind(run_id, trace_id)
    try:
        yield
    finally:
        unbind(token)


def _literal(text):
    """The Python literal ``text`` (a Celery args/kwargs repr) stands for, or None."""
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def ids_from_task_arguments(args, kwargs) -> RunIds | None:
    """The run an ``execute_run`` message is for, from its arguments (values or
    their reprs, as Celery's log records carry them): run id from the first
    positional argument or ``run_id``, trace id from ``trace_id`` when sent."""
    args, kwargs = _literal(args), _literal(kwargs)
    kwargs = kwargs if isinstance(kwargs, dict) else {}
    run_id = kwargs.get("run_id")
    if run_id is None and isinstance(args, (list, tuple)) and args:
        run_id = args[0]
    if not isinstance(run_id, int) or isinstance(run_id, bool):
        return None
    trace_id = kwargs.get("trace_id")
    return RunIds(run_id, trace_id if isinstance(trace_id, str) else None)


class RunContextFilter(logging.Filter):
    """Adds ``run_id`` and ``trace_id`` to a record emitted while a run is the
    current one, or to Celery's own lines about an ``execute_run`` task that are
    written outside it (the worker's main process logs "Task ... received"
    before the task starts), taking the ids from the task's arguments. A record
    that already has a ``run_id`` is left as it is. Always passes the record on."""

    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, "run_id"):
            return True
        ids = _current.get() or self._celery_task_ids(record)
        if ids is not None:
            record.run_id = ids.run_id
            if ids.trace_id is not None:
                record.trace_id = ids.trace_id
        return True

    @staticmethod
    def _celery_task_ids(record: logging.LogRecord) -> RunIds | None:
        # Celery's task lines (received, succeeded, retry, failed) pass the request as their `data` extra.
        data = getattr(record, "data", None)
        if not isinstance(data, dict) or data.get("name") != EXECUTE_RUN_TASK:
            return None
        return ids_from_task_arguments(data.get("args"), data.get("kwargs"))
