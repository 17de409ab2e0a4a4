"""Which environment variables a definition's nodes need, and which live workers
lack them: the workers are asked over the broker (their ``env_missing``
remote-control command, workers/control.py), since the worker that runs a
node reads its secrets, not the process that launches or checks it.

Used by ``manage.py doctor`` (every active definition) and by
``run_pipeline --dry-run`` (the definition at hand). Names variables, never
values; bounded by a reply timeout; never starts the embedded broker.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from apps.hostnames import ALL, AUTO, QUEUE_PREFIX
from apps.orchestration import dispatch
from apps.orchestration.launchrequest import Targets
from apps.text import printable

# Workers that have not answered in this long are reported as not answering.
ENV_REPLY_SECONDS = 2.0


def node_env_needs(node: dict) -> tuple[list[str], list[str]]:
    """The environment variables one node needs when it runs, and problems
    finding them out (an unknown or inactive channel). Reads channels from the database."""
    from apps.intelligence.base import providers
    from apps.notify.base import drivers
    from apps.notify.services import ChannelUnavailable, node_options, notification_channel_resolve, uses_channels

    config = node.get("config")
    if not isinstance(config, dict):
        config = {}
    # Any `<something>_env` naming a variable is needed, whatever reads it.
    names = [v for k, v in config.items() if k.endswith("_env") and isinstance(v, str) and v]
    problems: list[str] = []
    if node.get("type") == "notify":
        targets = []
        if uses_channels(config):
            channel_names = [config["channel"]] if "channel" in config else list(config.get("channels") or [])
            for name in channel_names:
                try:
                    targets.append(notification_channel_resolve(name=name, overrides=node_options(config)))
                except ChannelUnavailable as exc:
                    problems.append(str(exc))
        else:
            targets.append((config.get("driver", "console"), node_options(config)))
        for driver, options in targets:
            if driver in drivers:
                names += drivers.get(driver)().required_env(options)
    elif node.get("type") == "intelligence":
        provider = config.get("provider", "local")
        if provider in providers:
            names += providers.get(provider)().required_env(config)
    return list(dict.fromkeys(names)), problems


@dataclass(frozen=True)
class EnvNeed:
    """The variables one node needs (``label``: its id, or ``definition.id``)
    on the workers of the queues its runs go to: ``queues``, plus every host
    queue a live worker serves when ``every_host`` (hosts "all", host "auto")."""

    label: str
    names: tuple[str, ...]
    queues: tuple[str, ...]
    every_host: bool = False


def target_queues(target: object) -> tuple[tuple[str, ...], bool]:
    """The queues a launch's runs go to for ``target`` (target_choice's answer,
    or the Targets of ``auto`` looked up), and whether every host queue counts too."""
    if isinstance(target, Targets):
        return tuple(dict.fromkeys(dispatch.run_queue(host) for host in target.hosts)), False
    if target == ALL:
        return (), True
    if target == AUTO:
        # The host the alert names, else the shared queue.
        return (dispatch.run_queue(""),), True
    if isinstance(target, list):
        return tuple(dispatch.run_queue(host) for host in target), False
    return (dispatch.run_queue(target if isinstance(target, str) else ""),), False


def definition_env_needs(*, config: dict, target: object, prefix: str = "") -> tuple[list[EnvNeed], list[str]]:
    """What each node of definition ``config`` needs, for runs going to ``target``
    (see target_queues), labelled ``<prefix><node id>``; and the problems met
    finding out (unknown channels), labelled the same way. Reads channels."""
    queues, every_host = target_queues(target)
    needs: list[EnvNeed] = []
    problems: list[str] = []
    nodes = config.get("nodes") if isinstance(config, dict) else None
    for node in nodes if isinstance(nodes, list) else []:
        if not isinstance(node, dict):
            continue
        label = f"{prefix}{node.get('id')}"
        names, node_problems = node_env_needs(node)
        if names:
            needs.append(EnvNeed(label=label, names=tuple(names), queues=queues, every_host=every_host))
        problems += [printable(f"{label}: {problem}") for problem in node_problems]
    return needs, problems


@dataclass
class EnvReport:
    """What the workers said about the variables some nodes need.

    ``unasked``: why no worker could be asked (one line), else None.
    ``gaps``: one line per variable a worker that would run the node lacks.
    ``unchecked``: workers that did not answer (or could not), and queues no
    answering worker consumes. ``answered``: the workers that answered."""

    unasked: str | None = None
    gaps: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)


def _live_workers() -> dict[str, list[str]]:
    """The workers the presence rows call live, with their queues; empty when they cannot be read."""
    from django.db import DatabaseError
    from django.db.models.functions import Now

    from apps.orchestration.models import WorkerQueue

    live: dict[str, list[str]] = {}
    try:
        rows = WorkerQueue.objects.filter(expires_at__gt=Now()).order_by("worker", "queue")
        for worker, queue in rows.values_list("worker", "queue"):
            live.setdefault(worker, []).append(queue)
    except DatabaseError:
        return {}
    return live


def workers_env_report(*, needs: list[EnvNeed], timeout: float = ENV_REPLY_SECONDS, early: bool = False) -> EnvReport:
    """Asks every live worker which of the variables ``needs`` name it lacks
    (within ``timeout`` seconds; with ``early``, no longer than it takes the
    workers the presence rows know to answer) and says, per node, where a
    variable is missing: on every answering worker of a queue the node's runs
    go to, or on some of them by name. Workers the presence rows know that do
    not answer are listed as unchecked. Never starts the embedded broker."""
    names = sorted({name for need in needs for name in need.names})
    report = EnvReport()
    if not names:
        return report
    listed = printable(", ".join(names))
    reason = dispatch.broker_unreachable()
    if reason is not None:
        report.unasked = f"no worker was asked about {listed}: {reason}"
        return report
    known = _live_workers()
    answers = dispatch.workers_env_missing(names=names, timeout=timeout, expected=len(known) if early else None)
    if answers is None:
        report.unasked = f"no worker was asked about {listed}: the broker went away"
        return report
    if not answers:
        report.unasked = f"no live worker answered within {timeout:g}s: {listed} unchecked"
        return report
    replies: dict[str, tuple[set[str], set[str]]] = {}
    for worker, answer in sorted(answers.items()):
        if isinstance(answer, dict) and isinstance(answer.get("missing"), list):
            replies[worker] = ({str(n) for n in answer["missing"]}, {str(q) for q in answer.get("queues") or ()})
        else:
            report.unchecked.append(f"worker {worker} did not understand the question (an older version?)")
    report.answered = sorted(replies)
    for worker, queues in sorted(known.items()):
        if worker not in answers:
            report.unchecked.append(f"worker {worker} (queue {', '.join(queues)}) did not answer within {timeout:g}s")
    host_queues = sorted({q for _, queues in replies.values() for q in queues if q.startswith(QUEUE_PREFIX)})
    gaps: dict[str, None] = {}
    unchecked: dict[str, None] = {}
    for need in needs:
        for queue in dict.fromkeys([*need.queues, *(host_queues if need.every_host else [])]):
            consumers = [worker for worker, (_, queues) in replies.items() if queue in queues]
            if not consumers:
                needed = ", ".join(need.names)
                unchecked[f"{need.label}: no live worker of queue {queue} answered: {needed} unchecked"] = None
                continue
            for name in need.names:
                lacking = [worker for worker in consumers if name in replies[worker][0]]
                if lacking and len(lacking) == len(consumers):
                    gaps[f"{need.label}: {name} is not set on any live worker of queue {queue}"] = None
                for worker in lacking if len(lacking) < len(consumers) else []:
                    gaps[f"{need.label}: {name} is not set on worker {worker} (queue {queue})"] = None
    report.gaps = list(gaps)
    report.unchecked += list(unchecked)
    # Node ids and worker names are anyone's text: nothing in them may drive a terminal.
    report.gaps = [printable(line) for line in report.gaps]
    report.unchecked = [printable(line) for line in report.unchecked]
    return report


def workers_env_warnings(*, config: dict, target: object) -> list[str]:
    """The dry run's warnings ("Warning: notify: X is not set on any live worker
    of queue celery") about definition ``config`` run on ``target``: variables
    its nodes need that the workers which would run them lack, workers that did
    not answer, channels that cannot be found; one line when no worker could be
    asked. Waits no longer than the workers the presence rows know take to answer
    (at most ENV_REPLY_SECONDS); nothing to say, nothing asked."""
    needs, problems = definition_env_needs(config=config, target=target)
    report = workers_env_report(needs=needs, early=True)
    lines = [report.unasked] if report.unasked else [*report.gaps, *report.unchecked]
    return [f"Warning: {line}" for line in lines + problems]
