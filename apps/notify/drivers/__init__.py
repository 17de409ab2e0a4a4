"""Notify drivers: importing this package registers every driver in ``drivers``."""
from apps.notify.drivers import console, email, pagerduty, slack, webhook  # noqa: F401
