"""The exit codes of the commands that launch and show runs, a contract
scripts and cron jobs rely on (README: exit codes)."""
from __future__ import annotations

from collections.abc import Iterable

from apps.orchestration.launchrequest import Refusal
from apps.orchestration.models import PipelineRun

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_WAIT_GAVE_UP, EXIT_CANCELLED = 0, 1, 2, 3, 4

# A refused launch: bad input (an unknown run, one in the wrong state, another run's key, too); the broker
# unusable (the launch failed); no host to wait for.
_REFUSALS = {
    Refusal.BAD_INPUT: EXIT_BAD_INPUT,
    Refusal.NOT_FOUND: EXIT_BAD_INPUT,
    Refusal.STATE: EXIT_BAD_INPUT,
    Refusal.CONFLICT: EXIT_BAD_INPUT,
    Refusal.UNAVAILABLE: EXIT_FAILED,
    Refusal.NO_TARGET: EXIT_WAIT_GAVE_UP,
}


def exit_code_refused(refusal: Refusal) -> int:
    """The exit code of a launch or run action refused for ``refusal``."""
    return _REFUSALS[refusal]


_ENDED: dict[str, int] = {
    PipelineRun.Status.COMPLETED: EXIT_OK,
    PipelineRun.Status.FAILED: EXIT_FAILED,
    PipelineRun.Status.CANCELLED: EXIT_CANCELLED,
}


def exit_code_for(run: PipelineRun) -> int:
    """The exit code a run in this state stands for."""
    return _ENDED.get(run.status, EXIT_WAIT_GAVE_UP)


# The exit code of a group of runs is its worst member's, worst first.
_WORST_FIRST = (EXIT_FAILED, EXIT_WAIT_GAVE_UP, EXIT_CANCELLED, EXIT_OK)


def exit_code_worst(codes: Iterable[int]) -> int:
    """The exit code a group of runs with these codes stands for: failed
    over gave up over cancelled over completed."""
    present = set(codes)
    return next((code for code in _WORST_FIRST if code in present), EXIT_OK)
