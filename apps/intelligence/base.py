"""The intelligence family: providers that turn findings into an analysis."""
from __future__ import annotations

from apps.options import unknown_option_messages
from apps.registry import Registry


class ProviderUnavailable(Exception):
    """A provider could not give an analysis this time: unreachable, refused,
    timed out, missing its key, or answered something unusable.

    ``analysis_run`` answers it by running the fallback provider instead. The
    message is the short reason shown to people (``fallback_reason``): it must
    never contain a secret or a full URL.
    """


class AnalysisFailed(Exception):
    """A provider raised something other than ProviderUnavailable (a bug, or a
    failure it did not foresee). The message names the provider and the
    exception's class only: the exception's own text may hold a URL or a key."""


class Provider:
    """Base class of an analysis provider.

    ``analyze`` receives the incident an ingest node produced (or None) and
    the check results context nodes produced (dicts as made by
    ``CheckResult.to_dict``) and returns a dict with at least ``summary``,
    ``probable_cause``, ``recommendations`` (list of str) and ``severity``.
    A provider that depends on another service raises ProviderUnavailable
    when that service cannot answer.
    """

    name: str = ""
    options: frozenset[str] = frozenset()  # the options the provider takes

    def validate_config(self, config: dict) -> list[str]:
        return unknown_option_messages(config, self.options, f"provider {self.name}")

    def required_env(self, config: dict) -> list[str]:
        """The environment variables a node with ``config`` needs in the worker that analyses. Pure."""
        return []

    def analyze(self, *, incident: dict | None, checks: list[dict], config: dict) -> dict:
        raise NotImplementedError


providers: Registry[type[Provider]] = Registry("intelligence provider")
