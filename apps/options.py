"""Checks every plug-in family applies to its options: unknown keys and numbers."""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TypeGuard


def unknown_option_messages(config: dict, allowed: Iterable[str], owner: str) -> list[str]:
    """Messages for keys of ``config`` that ``owner`` ("check cpu", "driver slack"...)
    does not take: a typo would otherwise pass silently."""
    return [f"unknown option for {owner}: {key}" for key in sorted(set(config) - set(allowed), key=str)]


def is_number(value: object) -> TypeGuard[int | float]:
    """Whether ``value`` is a finite int or float (JSON true/false do not count)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_positive_number(value: object) -> bool:
    return is_number(value) and value > 0
