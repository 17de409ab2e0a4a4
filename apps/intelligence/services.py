"""Running and validating analyses by provider name."""
from __future__ import annotations

import logging

from celery.exceptions import SoftTimeLimitExceeded

from apps.intelligence import providers as _providers  # noqa: F401  (registers every provider outside Django too)
from apps.intelligence.base import AnalysisFailed, Provider, ProviderUnavailable, providers
from apps.secrets import scrub

logger = logging.getLogger(__name__)

DEFAULT_PROVIDER = "local"
# Runs instead of a provider that is unavailable: offline, so it always answers.
FALLBACK_PROVIDER = "local"

# Keys of an intelligence node's config that belong to the node, not to the provider.
NODE_KEYS = {"provider", "required"}


def analysis_run(*, provider: str, config: dict, incident: dict | None, checks: list[dict]) -> dict:
    """Analyse ``incident`` and ``checks`` with the named provider.

    ``config`` is the node's config; its ``provider`` key is ignored in favour
    of ``provider``. Returns the provider's analysis (summary, probable_cause,
    recommendations, severity, provider, ...), with known secret values
    scrubbed. When the provider is unavailable, returns the fallback
    provider's analysis of the same inputs instead, marked with
    ``requested_provider``, ``fallback_used: true`` and ``fallback_reason``
    (and logs a warning). Raises ValueError for an unknown provider or a
    config the provider rejects, and AnalysisFailed when a provider raises
    anything else than ProviderUnavailable.
    """
    if not isinstance(provider, str) or provider not in providers:
        raise ValueError(f"unknown provider: {provider}")
    instance = providers.get(provider)()
    options = _provider_options(config)
    problems = instance.validate_config(options)
    if problems:
        raise ValueError("; ".join(problems))
    checks = list(checks or [])
    try:
        result = _analyze(instance, incident=incident, checks=checks, config=options)
    except ProviderUnavailable as exc:
        if provider == FALLBACK_PROVIDER:
            raise
        return scrub(_fallback_run(requested=provider, reason=str(exc), incident=incident, checks=checks))
    # A remote answer could echo anything it was sent; nothing secret leaves here.
    return scrub({**result, "provider": provider})


def _fallback_run(*, requested: str, reason: str, incident: dict | None, checks: list[dict]) -> dict:
    """The fallback provider's analysis, saying which provider it stands in for and why."""
    reason = scrub(reason)
    logger.warning("Provider %s unavailable (%s); analysing with %s instead", requested, reason, FALLBACK_PROVIDER)
    result = _analyze(providers.get(FALLBACK_PROVIDER)(), incident=incident, checks=checks, config={})
    return {
        **result,
        "provider": FALLBACK_PROVIDER,
        "requested_provider": requested,
        "fallback_used": True,
        "fallback_reason": reason,
    }


def _analyze(instance: Provider, *, incident: dict | None, checks: list[dict], config: dict) -> dict:
    """``instance.analyze``; anything but ProviderUnavailable becomes AnalysisFailed naming its class."""
    try:
        return instance.analyze(incident=incident, checks=checks, config=config)
    except (ProviderUnavailable, SoftTimeLimitExceeded):
        raise  # the fallback's reason, or the run's time limit, which the engine records
    except Exception as exc:  # noqa: BLE001 - a provider bug must not put a URL or a key in a traceback
        logger.warning("Provider %s raised %s", instance.name, type(exc).__name__)
        raise AnalysisFailed(f"provider {instance.name} failed ({type(exc).__name__})") from None


def analysis_validate(*, config: object) -> list[str]:
    """Messages describing what is wrong with an intelligence config (empty when
    it is fine). Accepts any shape and never raises; touches nothing."""
    if not isinstance(config, dict):
        return ["intelligence config must be an object"]
    name = config.get("provider", DEFAULT_PROVIDER)
    if not isinstance(name, str):
        return [f"provider must be a string naming a provider (known: {', '.join(providers.keys())})"]
    if name not in providers:
        return [f"unknown provider: {name}"]
    return providers.get(name)().validate_config(_provider_options(config))


def _provider_options(config: dict | None) -> dict:
    """The part of a node config that is the provider's own."""
    return {key: value for key, value in (config or {}).items() if key not in NODE_KEYS}
