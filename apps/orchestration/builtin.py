"""The hard-coded alert pipeline, expressed as a definition the engine runs."""

BUILTIN_NAME = "builtin"
BUILTIN_STAGES = ("ingest", "check", "analyze", "notify")


def builtin_definition(*, notify_driver: str = "console") -> dict:
    """INGEST -> CHECK -> ANALYZE -> NOTIFY, notifying through ``notify_driver``."""
    return {
        "version": "1.0",
        "description": "Built-in alert pipeline: ingest -> check -> analyze -> notify",
        "nodes": [
            {"id": "ingest", "type": "ingest", "config": {}, "next": "check"},
            {
                "id": "check",
                "type": "context",
                "config": {"include": ["cpu", "memory", "disk"]},
                "next": "analyze",
            },
            {"id": "analyze", "type": "intelligence", "config": {"provider": "local"}, "next": "notify"},
            {"id": "notify", "type": "notify", "config": {"driver": notify_driver}},
        ],
    }
