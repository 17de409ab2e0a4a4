"""Validation of a pipeline definition: a pure function returning messages.

It touches nothing and never raises on a bad shape, so the CLI can run it
before anything is stored or enqueued. Values a node may take from the
worker's environment (webhook URLs, API keys) are checked when the node runs.
"""
from __future__ import annotations

import re

from apps import jsondata
from apps.hostnames import ALL, AUTO, HOST_NAME_RULE, host_name
from apps.options import is_positive_number
from apps.orchestration.conditions import when_messages
from apps.orchestration.nodes import node_types
from apps.orchestration.schedules import schedule_messages
from apps.orchestration.triggers import trigger_messages
from apps.text import printable

SUPPORTED_VERSIONS = ("1.0",)
TOP_LEVEL_FIELDS = {
    "version", "description", "tags", "defaults", "nodes", "schedule", "triggers", "max_concurrent", "host", "hosts",
}
# A definition's "hosts" list: one run per host at every launch.
HOSTS_MAX = 100
# Node ids are stored with each stage and shown in logs and displays.
NODE_ID_MAX = 100
# A stored definition's name (and the file name it is loaded from).
DEFINITION_NAME = re.compile(r"[-a-zA-Z0-9_]{1,100}")


def node_path(nodes: list[dict]) -> list[dict]:
    """The nodes in execution order: the first one, then along ``next``."""
    by_id = {node["id"]: node for node in nodes}
    ordered, current = [], nodes[0]["id"] if nodes else None
    while current is not None and current in by_id and by_id[current] not in ordered:
        ordered.append(by_id[current])
        current = by_id[current].get("next")
    return ordered


def _node_label(node: dict, index: int) -> str:
    node_id = node.get("id") if isinstance(node, dict) else None
    if isinstance(node_id, str) and node_id:
        shown = printable(node_id)
        return f"'{shown if len(shown) <= 60 else shown[:59] + '…'}'"
    return f"#{index + 1}"


def _validate_defaults(defaults) -> list[str]:
    if defaults is None:
        return []
    if not isinstance(defaults, dict):
        return ["'defaults' must be an object"]
    messages = []
    timeout = defaults.get("timeout_seconds")
    if timeout is not None and not is_positive_number(timeout):
        messages.append("defaults.timeout_seconds must be a positive number")
    retries = defaults.get("max_retries")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
        messages.append("defaults.max_retries must be a whole number of 0 or more")
    for key in sorted(set(defaults) - {"timeout_seconds", "max_retries"}):
        messages.append(f"unknown field in defaults: {key}")
    return messages


def _validate_hosts(config: dict) -> list[str]:
    """The optional "host" (a host name, or "auto": the alert's host) and
    "hosts" (a list of host names, or "all": every live worker host)."""
    messages = []
    if "host" in config and "hosts" in config:
        messages.append("Cannot give both 'host' and 'hosts'")
    if "host" in config:
        host = config["host"]
        if host != AUTO and host_name(host) is None:
            messages.append(f"'host' must be a host name ({HOST_NAME_RULE}) or \"{AUTO}\"")
    if "hosts" in config:
        hosts = config["hosts"]
        if hosts == ALL:
            pass
        elif not isinstance(hosts, list) or not hosts or len(hosts) > HOSTS_MAX:
            messages.append(f"'hosts' must be \"{ALL}\" or a list of 1 to {HOSTS_MAX} host names")
        else:
            names = [host_name(host) for host in hosts]
            bad = [printable(str(host)) for host, name in zip(hosts, names, strict=True) if name is None]
            if bad:
                messages.append(f"'hosts' holds what is not a host name ({HOST_NAME_RULE}): {', '.join(bad[:5])}")
            elif len(set(names)) != len(names):
                messages.append("'hosts' names a host more than once")
    return messages


def validate_definition(config) -> list[str]:
    """Return every problem found in ``config`` (empty when it is valid)."""
    if not isinstance(config, dict):
        return ["Pipeline definition must be a JSON object"]
    # Data no run could store is refused before anything looks into it.
    unstorable = jsondata.problems(config)
    if unstorable:
        return [f"Pipeline definition holds {problem}" for problem in unstorable]
    messages: list[str] = []
    version = config.get("version")
    if version is None:
        messages.append("Missing required field: version")
    elif str(version) not in SUPPORTED_VERSIONS:
        messages.append(f"Unsupported version: {version} (supported: {', '.join(SUPPORTED_VERSIONS)})")
    messages += _validate_defaults(config.get("defaults"))
    messages += schedule_messages(config.get("schedule"))
    messages += trigger_messages(config.get("triggers"))
    limit = config.get("max_concurrent")
    if "max_concurrent" in config and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        messages.append("max_concurrent must be a whole number of 1 or more")
    messages += _validate_hosts(config)
    for key in sorted(set(config) - TOP_LEVEL_FIELDS):
        messages.append(f"Unknown top-level field: {key}")

    nodes = config.get("nodes")
    if nodes is None:
        return [*messages, "Pipeline has no nodes"]
    if not isinstance(nodes, list):
        return [*messages, "'nodes' must be a list"]
    if not nodes:
        return [*messages, "Pipeline has no nodes"]

    ids: list[str] = []
    by_id: dict[str, dict] = {}
    for index, node in enumerate(nodes):
        label = _node_label(node, index)
        if not isinstance(node, dict):
            messages.append(f"Node {label} must be an object")
            continue
        node_id = node.get("id")
        if not isinstance(node_id, str) or not node_id:
            messages.append(f"Node {label} has no id")
        elif len(node_id) > NODE_ID_MAX or not node_id.isprintable():
            messages.append(f"Node {label} id must be at most {NODE_ID_MAX} printable characters")
        elif node_id in by_id:
            messages.append(f"Duplicate node id: '{node_id}'")
        else:
            ids.append(node_id)
            by_id[node_id] = node
        messages += _validate_node(node, label)

    # Graph checks need every node to have a usable id.
    for node_id in ids:
        nxt = by_id[node_id].get("next")
        if nxt is not None and (not isinstance(nxt, str) or nxt not in by_id):
            messages.append(f"Node '{node_id}' references non-existent next: '{nxt}'")
    if ids and isinstance(nodes[0], dict) and nodes[0].get("id") == ids[0]:
        messages += _graph_messages(ids, by_id)
    return messages


def _validate_node(node: dict, label: str) -> list[str]:
    messages = []
    node_type = node.get("type")
    for key in sorted(set(node) - {"id", "type", "config", "next", "required", "description", "when"}):
        messages.append(f"Node {label} has unknown field: {key}")
    if "required" in node and not isinstance(node["required"], bool):
        messages.append(f"Node {label} field 'required' must be true or false")
    if "when" in node:
        messages += [f"Node {label}: {message}" for message in when_messages(node["when"])]
    config = node.get("config", {})
    if not isinstance(config, dict):
        messages.append(f"Node {label} config must be an object")
        config = None
    if node_type is None or node_type == "":
        messages.append(f"Node {label} has no type")
    elif not isinstance(node_type, str) or node_type not in node_types:
        messages.append(f"Node {label} has unknown type: {node_type}")
    elif config is not None:
        handler = node_types.get(node_type)()
        messages += [f"Node {label}: {message}" for message in handler.validate(config)]
    return messages


def _graph_messages(ids: list[str], by_id: dict[str, dict]) -> list[str]:
    """Cycles along `next` from the first node, and nodes never reached."""
    messages = []
    seen: list[str] = []
    current: object = ids[0]  # then each node's `next`, which may be anything
    while isinstance(current, str) and current in by_id:
        if current in seen:
            loop = [*seen[seen.index(current):], current]
            messages.append(f"Cycle detected: {' -> '.join(loop)}")
            break
        seen.append(current)
        current = by_id[current].get("next")
    for node_id in ids:
        if node_id not in seen:
            messages.append(f"Node '{node_id}' is unreachable from the first node '{ids[0]}'")
    return messages
