"""Running and validating analyses by provider name."""
from __future__ import annotations

from apps.intelligence import providers as _providers  # noqa: F401  (registers every provider outside Django too)
from apps.intelligence.base import providers

DEFAULT_PROVIDER = "local"

# Keys of an intelligence node's config that belong to the node, not to the provider.
NODE_KEYS = {"provider", "required"}


def analysis_run(*, provider: str, config: dict, incident: dict | None, checks: list[dict]) -> dict:
    """Analyse ``incident`` and ``checks`` with the named provider.

    ``config`` is the node's config; its ``provider`` key is ignored in favour
    of ``provider``. Returns the provider's analysis (summary, probable_cause,
    recommendations, severity, provider, ...). Raises ValueError for an
    unknown provider or a config the provider rejects; network providers may
    raise OSError.
    """
    if not isinstance(provider, str) or provider not in providers:
        raise ValueError(f"unknown provider: {provider}")
    instance = providers.get(provider)()
    options = _provider_options(config)
    problems = instance.validate_config(options)
    if problems:
        raise ValueError("; ".join(problems))
    result = instance.analyze(incident=incident, checks=list(checks or []), config=options)
    return {**result, "provider": provider}


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
