"""Helpers shared by node types."""


def latest_incident(results: dict) -> dict | None:
    """The incident of the most recent ingest node that produced one, with the
    alerts that node read, if any."""
    for entry in reversed(list(results.values())):
        output = entry["output"]
        if entry["type"] == "ingest" and output.get("incident"):
            return {**output["incident"], "alerts": output.get("alerts", [])}
    return None


def all_checks(results: dict) -> list[dict]:
    """Every check result produced by context nodes so far, in order."""
    checks: list[dict] = []
    for entry in results.values():
        if entry["type"] == "context":
            checks.extend(entry["output"].get("checks", {}).values())
    return checks


def latest_analysis(results: dict) -> dict | None:
    for entry in reversed(list(results.values())):
        if entry["type"] == "intelligence":
            return entry["output"]
    return None


def measured_host(results: dict) -> str | None:
    """The host the most recent context node measured, if any."""
    for entry in reversed(list(results.values())):
        if entry["type"] == "context" and entry["output"].get("host"):
            return str(entry["output"]["host"])
    return None
