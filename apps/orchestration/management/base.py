"""What every command of this project shares: one-line usage errors and
error messages that cannot drive the terminal."""
from __future__ import annotations

import functools
import math
import os
import sys
from datetime import timedelta
from typing import overload

from django.core.management.base import BaseCommand, CommandError
from django.db import InterfaceError, OperationalError

from apps.orchestration.exit_codes import EXIT_BAD_INPUT, exit_code_refused
from apps.orchestration.launchrequest import LaunchError
from apps.orchestration.runqueries import MAX_SECONDS, FilterError, duration_parse
from apps.secrets import scrub
from apps.text import printable


def _parser_error(parser, message: str):
    """argparse's error, as one line (argparse prints the whole usage first)."""
    if parser.called_from_command_line:
        parser.exit(EXIT_BAD_INPUT, f"{parser.prog}: error: {printable(message)} (see {parser.prog} --help)\n")
    raise CommandError(f"Error: {message}", returncode=EXIT_BAD_INPUT)


def seconds_option(value: float | None, flag: str, *, zero: bool = False) -> float | None:
    """``value`` of the option ``flag`` when it is a number of seconds above 0
    (0 allowed with ``zero``) and at most MAX_SECONDS; CommandError with exit 2
    otherwise (NaN and infinities included)."""
    if value is None or (math.isfinite(value) and (value > 0 or (zero and value == 0)) and value <= MAX_SECONDS):
        return value
    least = "from 0" if zero else "greater than 0 and"
    raise CommandError(f"{flag} must be a number of seconds {least} up to {MAX_SECONDS}", returncode=EXIT_BAD_INPUT)


@overload
def duration_option(value: str, flag: str) -> timedelta: ...
@overload
def duration_option(value: None, flag: str) -> None: ...
def duration_option(value: str | None, flag: str) -> timedelta | None:
    """``value`` of the option ``flag`` (``30s``, ``15m``, ``2h``, ``7d``) as a
    timedelta above 0 and at most MAX_SECONDS; CommandError with exit 2 otherwise."""
    if value is None:
        return None
    try:
        return duration_parse(value, flag)
    except FilterError as exc:
        raise CommandError(str(exc), returncode=EXIT_BAD_INPUT) from None


def launch_refused(exc: LaunchError) -> CommandError:
    """The CommandError a refused launch or run action ends a command with."""
    return CommandError(str(exc), returncode=exit_code_refused(exc.refusal))


class PipelineCommand(BaseCommand):
    """BaseCommand whose bad arguments end in one line and exit 2, whose
    CommandError messages show control characters escaped, and which ends in
    one line and exit 1 when the database cannot be used, and quietly with
    exit 1 when the reader of its output goes away (``| head``)."""

    def run_from_argv(self, argv):
        try:
            super().run_from_argv(argv)
        except BrokenPipeError:
            # Whatever is still buffered for the closed pipe goes nowhere, so exiting prints nothing either.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # Django builds the parser itself: its error is replaced on this instance.
        parser.error = functools.partial(_parser_error, parser)  # type: ignore[method-assign]
        return parser

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except CommandError as exc:
            text = str(exc)
            shown = printable(text, lines=True)
            if shown != text:
                raise CommandError(shown, returncode=exc.returncode) from None
            raise
        except (OperationalError, InterfaceError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CommandError(
                f"The database cannot be used: {printable(scrub(reason))}", returncode=1
            ) from None
