"""`local` provider: rule-based analysis of check results and an incident, offline."""
from __future__ import annotations

import re
import socket

from apps.checkers.base import CRITICAL, OK, STATUS_RANK, WARNING
from apps.intelligence.base import Provider, providers

# Incident severities (critical / warning / info) on the check status scale.
INCIDENT_SEVERITY = {"critical": CRITICAL, "warning": WARNING, "info": OK}

# Words in alert names, labels and titles that say which check an alert is about.
TOPIC_WORDS = {
    "cpu": {"cpu", "cpus", "processor", "processors"},
    "memory": {"memory", "mem", "ram", "oom", "swap", "rss"},
    "disk": {"disk", "disks", "filesystem", "filesystems", "fs", "storage", "inode", "inodes",
             "volume", "mountpoint"},
    "load": {"load", "loadavg"},
}

PROBLEM_CAUSE = {
    "cpu": "CPU saturation",
    "memory": "Memory pressure",
    "disk": "Disk space running out",
    "load": "More runnable work than the CPUs can take",
}

# Splits "HighCPUUsage", "node_filesystem_avail" and "load1" into words.
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


@providers.register("local")
class LocalProvider(Provider):
    """Explains check results and an incident with fixed rules; needs no network or keys."""

    name = "local"

    def analyze(self, *, incident: dict | None, checks: list[dict], config: dict) -> dict:
        """Summarise ``checks`` and ``incident``: what is wrong, why, and what to do."""
        checks = _worst_per_name(checks)
        problems = sorted(
            (c for c in checks if c.get("status") in (WARNING, CRITICAL)),
            key=lambda c: -STATUS_RANK[c["status"]],
        )
        open_incident = incident if incident and incident.get("status", "open") != "resolved" else None
        alerts = [a for a in (incident or {}).get("alerts") or [] if isinstance(a, dict)]
        firing = [a for a in alerts if a.get("status", "firing") != "resolved"]
        topics = _topics(open_incident, firing) if open_incident else []
        by_name = {c.get("name"): c for c in checks}
        topic_state = {t: _confirmation(by_name.get(t)) for t in topics}

        statuses = [c.get("status", OK) for c in checks]
        if open_incident:
            statuses.append(INCIDENT_SEVERITY.get(open_incident.get("severity", ""), WARNING))
        severity = max(statuses, key=lambda s: STATUS_RANK.get(s, 0), default=OK)

        return {
            "provider": self.name,
            "severity": severity,
            "summary": _summary(checks, problems, incident, open_incident, firing),
            "probable_cause": _cause(checks, problems, open_incident, firing, topics, by_name),
            "recommendations": _recommendations(checks, problems, incident, open_incident, firing, topic_state),
            "findings": {
                "checks": len(checks),
                OK: sum(1 for c in checks if c.get("status") == OK),
                WARNING: sum(1 for c in checks if c.get("status") == WARNING),
                CRITICAL: sum(1 for c in checks if c.get("status") == CRITICAL),
                "problems": len(problems),
                "alerts": len(alerts),
                "alerts_firing": len(firing),
            },
            "alert_topics": topic_state,
        }


def _worst_per_name(checks: list[dict]) -> list[dict]:
    """One result per check name, the worst when several context nodes ran it, in first-seen order."""
    chosen: dict[str, dict] = {}
    for check in checks or []:
        if not isinstance(check, dict):
            continue
        name = check.get("name", "")
        if name not in chosen or _rank(check) > _rank(chosen[name]):
            chosen[name] = check
    return list(chosen.values())


def _rank(check: dict) -> int:
    return STATUS_RANK.get(check.get("status", ""), 0)


def _reading(check: dict) -> str:
    value, unit = check.get("value"), check.get("unit", "")
    text = f"{value:.1f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
    return f"{text}{unit}" if unit in ("%", "") else f"{text} {unit}"


def _where(check: dict) -> str:
    path = (check.get("details") or {}).get("path")
    return f" on {path}" if path else ""


def _healthy_item(check: dict) -> str:
    return f"{check.get('name')} {_reading(check)}"


def _problem_item(check: dict) -> str:
    return f"{check.get('name')} {check.get('status')} at {_reading(check)}{_where(check)}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _incident_label(incident: dict, *, start: bool = False) -> str:
    """'incident #3 "title"' ('Incident ...' at the start of a sentence)."""
    label = f"#{incident['id']} " if incident.get("id") is not None else ""
    word = "Incident" if start else "incident"
    return f'{word} {label}"{incident.get("title", "")}"'


def _summary(checks, problems, incident, open_incident, firing) -> str:
    healthy = ", ".join(_healthy_item(c) for c in checks)
    problem_list = ", ".join(_problem_item(c) for c in problems)
    if open_incident:
        head = f"{_incident_label(open_incident, start=True)} ({open_incident.get('severity', 'warning')}) is open"
        if not checks:
            names = ", ".join(dict.fromkeys(_alert_label(a) for a in firing))
            alerts = f" with {_plural(len(firing), 'firing alert')}: {names}" if firing else ""
            return f"{head}{alerts}; no live checks were run."
        if problems:
            return f"{head} and this host has {_plural(len(problems), 'problem')}: {problem_list}."
        return f"{head}, but this host looks healthy: {healthy}, all within thresholds."
    resolved = f"; {_incident_label(incident)} is resolved" if incident else ""
    if not checks:
        if incident:
            return f"{_incident_label(incident, start=True)} is resolved; no live checks were run."
        return "Nothing to analyse: no check results and no incident."
    if problems:
        return f"{_plural(len(problems), 'problem')}: {problem_list}{resolved}."
    return f"System healthy: {healthy}, all within thresholds{resolved}."


def _alert_label(alert: dict) -> str:
    name, host = alert.get("name", "alert"), alert.get("host")
    return f"{name} on {host}" if host else str(name)


def _topics(incident: dict, alerts: list[dict]) -> list[str]:
    """The checks (cpu, memory, disk, load) the incident's title and alerts talk about."""
    texts = [str(incident.get("title", ""))]
    for alert in alerts:
        texts += [str(alert.get("name", "")), str(alert.get("description", ""))]
        labels = alert.get("labels") or {}
        if isinstance(labels, dict):
            texts += [f"{key} {value}" for key, value in labels.items()]
    words = {word.lower() for text in texts for word in _WORD.findall(text)}
    return [topic for topic, vocabulary in TOPIC_WORDS.items() if words & vocabulary]


def _confirmation(check: dict | None) -> str:
    if check is None:
        return "not checked"
    return "confirmed" if check.get("status") in (WARNING, CRITICAL) else "not confirmed"


def _cause(checks, problems, open_incident, firing, topics, by_name) -> str:
    sentences = []
    if problems:
        worst = problems[0]
        cause = PROBLEM_CAUSE.get(worst.get("name"), f"{worst.get('name')} out of range")
        extra = f", the worst of {len(problems)} problems" if len(problems) > 1 else ""
        sentences.append(f"{cause}: {_problem_item(worst)}{extra}.")
    elif checks:
        if open_incident:
            sentences.append("No check is out of range on this host, so the incident's cause is not visible here.")
        else:
            sentences.append("Nothing points to a problem: every check is within its thresholds.")
    elif open_incident:
        sentences.append("No live checks were run, so the alerts cannot be confirmed from this host.")
    else:
        sentences.append("No findings to explain.")

    if open_incident:
        for topic in topics:
            check = by_name.get(topic)
            if check is None:
                sentences.append(f"The incident's alerts mention {topic}, but no {topic} check was run to confirm it.")
            elif check.get("status") in (WARNING, CRITICAL):
                sentences.append(
                    f"The incident's alerts mention {topic}, and the live {topic} check confirms it "
                    f"({check['status']} at {_reading(check)}{_where(check)})."
                )
            else:
                sentences.append(
                    f"The incident's alerts mention {topic}, but the live {topic} check does not "
                    f"confirm it ({_reading(check)}{_where(check)}, ok)."
                )
        if not topics and checks:
            names = ", ".join(dict.fromkeys(_alert_label(a) for a in firing)) or open_incident.get("title", "")
            sentences.append(
                f"The incident ({names}) does not name cpu, memory, disk or load, "
                "so the live checks can neither confirm nor rule it out."
            )
    return " ".join(sentences)


def _bytes(count: object) -> str:
    """A byte count for people: 12.3 GiB."""
    if not isinstance(count, (int, float)) or isinstance(count, bool):
        return "?"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"  # unreachable; keeps type checkers content


def _recommend_disk(check: dict) -> list[str]:
    details = check.get("details") or {}
    paths = details.get("paths") or {}
    flagged = {p: d for p, d in paths.items() if isinstance(d, dict) and d.get("status") in (WARNING, CRITICAL)}
    if not flagged:
        # Hand-built or older results without per-path status: the fullest path is the one.
        path = details.get("path") or "the fullest filesystem"
        flagged = {path: paths.get(path) or {"percent": check.get("value")}}
    recommendations = []
    for path, usage in flagged.items():
        percent = usage.get("percent", check.get("value"))
        space = (
            f", {_bytes(usage['free_bytes'])} free of {_bytes(usage['total_bytes'])}"
            if "free_bytes" in usage and "total_bytes" in usage else ""
        )
        recommendations.append(
            f"Free space on {path} ({_reading({'value': percent, 'unit': '%'})} used{space}): "
            f"find the largest directories (du -xh {path} | sort -h | tail), clear old logs, "
            "caches and core dumps, or grow the filesystem."
        )
    return recommendations


def _recommend_memory(check: dict) -> list[str]:
    details = check.get("details") or {}
    space = (
        f", {_bytes(details['available_bytes'])} available of {_bytes(details['total_bytes'])}"
        if "available_bytes" in details and "total_bytes" in details else ""
    )
    return [
        f"Reduce memory use ({_reading(check)} used{space}): find the largest processes "
        "(ps aux --sort=-rss | head), restart any that leak, or add memory."
    ]


def _recommend_cpu(check: dict) -> list[str]:
    cpus = (check.get("details") or {}).get("cpu_count")
    over = f" across {cpus} CPUs" if cpus else ""
    return [
        f"Find what is using the CPU ({_reading(check)} busy{over}): list the top consumers "
        "(top -o %CPU), stop runaway jobs, or add CPU capacity."
    ]


def _recommend_load(check: dict) -> list[str]:
    details = check.get("details") or {}
    load = (
        f"load {details['load_1m']} on {details['cpu_count']} CPUs, "
        if "load_1m" in details and "cpu_count" in details else ""
    )
    return [
        f"Shorten the run queue ({load}{_reading(check)} of capacity): look for processes stuck "
        "on I/O (vmstat 1, iostat -x) or too many concurrent jobs, and spread the work."
    ]


RECOMMENDERS = {
    "cpu": _recommend_cpu,
    "memory": _recommend_memory,
    "disk": _recommend_disk,
    "load": _recommend_load,
}


def _recommend_other(check: dict) -> list[str]:
    where = f"{check.get('name')} ({check.get('status')} at {_reading(check)})"
    return [f"Investigate {where}: {check.get('message', '')}".rstrip(": ")]


def _recommendations(checks, problems, incident, open_incident, firing, topic_state) -> list[str]:
    recommendations: list[str] = []
    for check in problems:
        recommendations += RECOMMENDERS.get(check.get("name"), _recommend_other)(check)

    if open_incident:
        hosts = list(dict.fromkeys(a["host"] for a in firing if a.get("host")))
        here = _this_host()
        elsewhere = [h for h in hosts if h.split(".")[0].lower() != here]
        for topic, state in topic_state.items():
            if state == "not checked":
                recommendations.append(
                    f'Run the {topic} check to confirm the alert: add "{topic}" to a context node\'s include.'
                )
        if not checks:
            target = ", ".join(hosts) or f'the host named in {_incident_label(open_incident)}'
            recommendations.append(
                f"Add a context node (cpu, memory, disk) before the analysis to check the host live, "
                f"or look at {target} directly."
            )
        elif not problems:
            healthy = ", ".join(_healthy_item(c) for c in checks)
            if elsewhere:
                recommendations.append(
                    f"Look at {', '.join(elsewhere)} directly: the alerts come from there, "
                    f"and this host looks fine ({healthy})."
                )
            elif hosts:
                recommendations.append(
                    f"The alerts are about this host, which looks fine now ({healthy}): check whether "
                    "the condition has cleared and whether the alert rule's threshold matches these checks."
                )
            else:
                recommendations.append(
                    f'Look at the host that raised {_incident_label(open_incident)} directly: '
                    f"this host looks fine ({healthy})."
                )
        elif elsewhere and topic_state and "confirmed" not in topic_state.values():
            # This host has problems, but not the ones the alerts are about.
            recommendations.append(
                f"Look at {', '.join(elsewhere)} as well: the alerts there ({', '.join(topic_state)}) "
                "are not confirmed by this host's checks, so its problems may be unrelated."
            )

    if not recommendations:
        if checks:
            readings = ", ".join(_healthy_item(c) for c in checks)
            recommendations.append(f"No action needed: every check is within its thresholds ({readings}).")
        elif incident:
            recommendations.append(f"No action needed: {_incident_label(incident)} is resolved.")
        else:
            recommendations.append("No action needed: nothing was reported.")
    return recommendations


def _this_host() -> str:
    """This machine's short host name, lower-cased, for comparing with alert hosts."""
    return socket.gethostname().split(".")[0].lower()
