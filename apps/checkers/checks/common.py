"""Helpers shared by checkers: resolving thresholds, wording results, checking options."""
from __future__ import annotations

from apps.checkers.base import CRITICAL, WARNING, Checker
from apps.options import is_number


def limits(checker: Checker, thresholds: dict | None) -> dict:
    """The checker's default thresholds with ``thresholds`` laid over them."""
    return {**checker.default_thresholds, **(thresholds or {})}


def number(value: float) -> str:
    """A threshold or reading as people write it: 80 rather than 80.0, else one decimal."""
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:.1f}"


def verdict(status: str, thresholds: dict, unit: str = "%") -> str:
    """The bracketed part of a message: the status and the limit that matters next."""
    warning, critical = number(thresholds["warning"]), number(thresholds["critical"])
    if status == CRITICAL:
        return f"(critical, at or above {critical}{unit})"
    if status == WARNING:
        return f"(warning, at or above {warning}{unit}, critical at {critical}{unit})"
    return f"(ok, warning at {warning}{unit})"


def interval_problems(check: str, options: dict, maximum: float) -> list[str]:
    """A message when the ``interval`` option is given but is not a number of
    seconds in (0, maximum]."""
    if "interval" not in options:
        return []
    interval = options["interval"]
    if is_number(interval) and 0 < interval <= maximum:
        return []
    return [
        f"option interval for check {check} must be a number of seconds above 0 "
        f"and at most {maximum:g} (got {interval!r})"
    ]


def string_list_problems(check: str, option: str, options: dict, noun: str) -> list[str]:
    """A message when ``option`` is given but is not a non-empty list of
    non-empty strings (``noun`` names one item: path, interface)."""
    if option not in options:
        return []
    items = options[option]
    if not isinstance(items, list) or not all(isinstance(i, str) and i.strip() for i in items):
        return [f"option {option} for check {check} must be a list of non-empty strings"]
    if not items:
        return [f"option {option} for check {check} must name at least one {noun}"]
    return []
