"""Helpers shared by checkers: resolving thresholds, wording results, checking options."""
from __future__ import annotations

import math

from apps.checkers.base import CRITICAL, WARNING, Checker


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


def unknown_options(check: str, options: dict, allowed: set[str]) -> list[str]:
    """Messages for options a check does not take (a typo would otherwise pass silently)."""
    return [f"unknown option for check {check}: {key}" for key in sorted(set(options) - allowed, key=str)]


def is_number(value: object) -> bool:
    """Whether ``value`` is a finite int or float (JSON true/false do not count)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

