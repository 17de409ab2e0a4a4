"""Alert parsers: importing this package registers every parser in ``parsers``."""
from apps.alerts.parsers import alertmanager, datadog, generic, grafana, pagerduty  # noqa: F401
from apps.alerts.parsers.base import ParsedAlert, Parser, PayloadError, parsers

__all__ = ["ParsedAlert", "Parser", "PayloadError", "parsers"]
