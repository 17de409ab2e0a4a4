"""The notify family's Message and its notice kinds."""
from __future__ import annotations

import pytest

from apps.notify.base import NOTICES, Message


def test_a_message_is_a_plain_notification_unless_told_otherwise():
    assert Message("t", "b", "ok").notice == ""
    assert NOTICES == ("", "problem", "reminder", "resolved")


def test_a_message_with_an_unknown_notice_is_refused():
    with pytest.raises(ValueError, match="unknown notice: 'cleared'"):
        Message("t", "b", "ok", notice="cleared")
