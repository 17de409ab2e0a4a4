"""Running and validating system checks by name."""
from __future__ import annotations

from apps.checkers import checks  # noqa: F401  (registers every checker outside Django too)
from apps.checkers.base import checkers
from apps.checkers.checks.common import number
from apps.options import is_number

THRESHOLD_KEYS = ("warning", "critical")


def checks_run(*, include: list[str], thresholds: dict, options: dict) -> list[dict]:
    """Run the checks named in ``include``, in that order, on this host.

    ``thresholds[name]`` overrides that check's default warning/critical limits
    (either one alone is fine); ``options[name]`` is passed to the check.
    Returns one ``CheckResult.to_dict()`` per check. Blocks while checks sample
    (cpu for its interval). Raises ValueError when the arguments do not
    validate or a check cannot read what it was asked for (a missing disk
    path), OSError when the system refuses a read.
    """
    problems = checks_validate(include=include, thresholds=thresholds, options=options)
    if problems:
        raise ValueError("; ".join(problems))
    results = []
    for name in include:
        checker = checkers.get(name)()
        limits = {**checker.default_thresholds, **thresholds.get(name, {})}
        result = checker.run(thresholds=limits, options=options.get(name, {}))
        results.append(result.to_dict())
    return results


def checks_validate(*, include: object, thresholds: object, options: object) -> list[str]:
    """Messages describing what is wrong with these check arguments (empty when
    they are fine). Accepts any shape and never raises; touches nothing."""
    messages: list[str] = []
    names = _validate_include(include, messages)
    messages += _validate_thresholds(thresholds, names)
    messages += _validate_options(options, names)
    return messages


def _validate_include(include: object, messages: list[str]) -> list[str]:
    """Append problems with ``include``; return the known check names it lists."""
    if not isinstance(include, list) or not all(isinstance(name, str) for name in include):
        messages.append("include must be a list of check names")
        return []
    if not include:
        messages.append(f"include must name at least one check (known: {', '.join(checkers.keys())})")
        return []
    known = []
    for name in dict.fromkeys(include):
        if include.count(name) > 1:
            messages.append(f"check listed more than once in include: {name}")
        if name in checkers:
            known.append(name)
        else:
            messages.append(f"unknown check: {name}")
    return known


def _scope_problem(kind: str, name: object, included: list[str]) -> str | None:
    """Why ``kind`` (thresholds/options) may not be given for check ``name``, if it may not."""
    if name not in checkers:
        return f"{kind} given for unknown check: {name}"
    if name not in included:
        return f"{kind} given for check not in include: {name}"
    return None


def _validate_thresholds(thresholds: object, included: list[str]) -> list[str]:
    if not isinstance(thresholds, dict):
        return ["thresholds must be an object mapping check names to {warning, critical}"]
    messages = []
    for name, limits in thresholds.items():
        problem = _scope_problem("thresholds", name, included)
        if problem:
            messages.append(problem)
            continue
        if not isinstance(limits, dict):
            messages.append(f"thresholds for {name} must be an object with warning and/or critical")
            continue
        for key in sorted(set(limits) - set(THRESHOLD_KEYS), key=str):
            messages.append(f"unknown threshold for {name}: {key} (expected warning or critical)")
        bad = False
        for key in THRESHOLD_KEYS:
            if key in limits and not is_number(limits[key]):
                messages.append(f"threshold {name}.{key} must be a number (got {limits[key]!r})")
                bad = True
        if bad:
            continue
        # An override of one limit is compared with the other's default.
        merged = {**checkers.get(name).default_thresholds, **limits}
        if merged["warning"] > merged["critical"]:
            messages.append(
                f"threshold {name}.warning ({number(merged['warning'])}) must not be above "
                f"{name}.critical ({number(merged['critical'])})"
            )
    return messages


def _validate_options(options: object, included: list[str]) -> list[str]:
    if not isinstance(options, dict):
        return ["options must be an object mapping check names to their options"]
    messages = []
    for name, check_options in options.items():
        problem = _scope_problem("options", name, included)
        if problem:
            messages.append(problem)
            continue
        if not isinstance(check_options, dict):
            messages.append(f"options for {name} must be an object")
            continue
        messages += checkers.get(name)().validate_options(check_options)
    return messages
