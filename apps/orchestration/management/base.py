"""What every command of this project shares: one-line usage errors and
error messages that cannot drive the terminal."""
from __future__ import annotations

import functools
import math
import os
import re
import sys
from datetime import timedelta
from typing import overload

from django.core.management.base import BaseCommand, CommandError
from django.db import InterfaceError, OperationalError

from apps.orchestration.launchrequest import LaunchError
from apps.orchestration.management.exit_codes import EXIT_BAD_INPUT, exit_code_refused
from apps.secrets import scrub
from apps.text import printable

# Longer than any wait or grace anyone means (about 31 years), and within what timers and dates can hold.
MAX_SECONDS = 1_000_000_000


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


DURATION = re.compile(r"([0-9]{1,12})([smhd])")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@overload
def duration_option(value: str, flag: str) -> timedelta: ...
@overload
def duration_option(value: None, flag: str) -> None: ...
def duration_option(value: str | None, flag: str) -> timedelta | None:
    """``value`` of the option ``flag`` (``30s``, ``15m``, ``2h``, ``7d``) as a
    timedelta above 0 and at most MAX_SECONDS; CommandError with exit 2 otherwise."""
    if value is None:
        return None
    match = DURATION.fullmatch(value)
    seconds = int(match[1]) * DURATION_UNITS[match[2]] if match else 0
    if not 0 < seconds <= MAX_SECONDS:
        raise CommandError(
            f"{flag} must be a duration above 0 such as 30s, 15m, 2h or 7d (at most {MAX_SECONDS}s), "
            f"not {printable(value[:40])}{'…' if len(value) > 40 else ''}",
            returncode=EXIT_BAD_INPUT,
        )
    return timedelta(seconds=seconds)


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
