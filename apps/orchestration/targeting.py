"""Where a launch's runs go: a named host's queue, the host an alert names,
every host a live worker serves, a definition's list of hosts, or the
shared queue every worker consumes."""
from __future__ import annotations

from apps.alerts.parsers.base import PayloadError
from apps.alerts.services import alert_hosts
from apps.hostnames import ALL, AUTO, HOST_NAME_RULE, host_name
from apps.orchestration import dispatch
from apps.orchestration.inputs import definition_check
from apps.orchestration.launchrequest import LaunchError, Refusal, ResolvedDefinition, Targets
from apps.orchestration.validation import node_path
from apps.text import printable


def target_choice(*, host: str | None, config: dict) -> str | list[str]:
    """What a launch targets before anyone is asked: ``host`` (``--host``)
    when given, else the definition's "host" or "hosts": a host name, "" (the
    shared queue), AUTO, ALL, or a list of host names. Raises LaunchError
    for a ``host`` that is none of these."""
    if host is not None:
        choice = host.lower() if isinstance(host, str) else host
        if choice not in (AUTO, ALL) and host_name(choice) is None:
            shown = printable(str(host)[:80])
            raise LaunchError(f"--host must be a host name ({HOST_NAME_RULE}), {AUTO} or {ALL}: {shown}")
        return choice
    # Read as validate_definition allows; anything else counts as no choice.
    hosts = config.get("hosts")
    if hosts == ALL:
        return ALL
    if isinstance(hosts, list) and hosts:
        return [name for name in map(host_name, hosts) if name]
    choice = config.get("host") or ""
    return choice if choice == AUTO else host_name(choice) or ""


def target_host_check(target_host: str) -> None:
    """Raise LaunchError unless ``target_host`` is a host name or empty (the shared queue)."""
    if target_host and host_name(target_host) != target_host:
        raise LaunchError(f"--host must be a host name ({HOST_NAME_RULE}), {AUTO} or {ALL}")


def launch_targets(
    *, host: str | None, resolved: ResolvedDefinition, payload: dict, source: str, live_timeout: float = 2.0
) -> Targets:
    """The hosts the runs of a launch target: ``host`` (``--host``) when
    given, else the definition's "host" or "hosts", else the shared queue.

    A host name targets that host; ``auto`` the host the payload's first
    alert names (read as the definition's ingest node would read it), or the
    shared queue when it names none; ``all`` (or a definition's "hosts": "all")
    one run for each host a live worker serves, asked over the broker (this
    takes ``live_timeout`` seconds); a definition's list of hosts one run for
    each. Raises LaunchError: BAD_INPUT for an invalid definition or a value
    that is not a host name, NO_TARGET when ``all`` finds no live worker
    host, UNAVAILABLE when the broker cannot be asked."""
    definition_check(resolved=resolved)
    return checked_targets(host=host, resolved=resolved, payload=payload, source=source, live_timeout=live_timeout)


def checked_targets(
    *, host: str | None, resolved: ResolvedDefinition, payload: dict, source: str, live_timeout: float = 2.0
) -> Targets:
    """launch_targets for a definition already validated (beat validates each
    definition once, not at every tick). Raises LaunchError as it does."""
    config = resolved.config
    choice = target_choice(host=host, config=config)
    if isinstance(choice, list):
        return Targets(hosts=choice, fan_out=True)
    if choice == ALL:
        dispatch.broker_ready()
        hosts = dispatch.live_hosts(timeout=live_timeout)
        if hosts is None:
            raise LaunchError(
                "Cannot ask the workers which hosts they serve: the broker did not answer", Refusal.UNAVAILABLE
            )
        if not hosts:
            raise LaunchError(
                "No live worker serves a host, so there is no host to run on (--host all).\n"
                "Start one on each host with:  MONITOR_HOST=<host> celery -A workers worker -l info",
                Refusal.NO_TARGET,
            )
        return Targets(hosts=hosts, fan_out=True, live=True)
    if choice == AUTO:
        return alert_target(config=config, payload=payload, source=source)
    return Targets(hosts=[choice])


def alert_target(*, config: dict, payload: dict, source: str) -> Targets:
    """The target of ``auto``: the host of the payload's first alert that names one."""
    ingest = next((n for n in node_path(config.get("nodes") or []) if n.get("type") == "ingest"), None)
    source = ((ingest or {}).get("config") or {}).get("source") or source
    try:
        named = alert_hosts(payload=payload, source=source)
    except PayloadError:
        named = []
    if not named:
        return Targets(hosts=[""], note="The alert names no host: the run goes to the shared queue.")
    host = host_name(named[0])
    if host is None:
        return Targets(
            hosts=[""],
            note=f"The alert's host is not a host name ({printable(named[0][:80])}): the run goes to the shared queue.",
        )
    return Targets(hosts=[host])
