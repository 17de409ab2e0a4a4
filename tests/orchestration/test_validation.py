"""validate_definition: a pure function that reports every problem as a message."""
import copy

import pytest

from apps.orchestration.validation import validate_definition

VALID = {
    "version": "1.0",
    "nodes": [
        {"id": "metrics", "type": "context", "config": {"include": ["cpu", "memory", "disk"]}, "next": "analyze"},
        {"id": "analyze", "type": "intelligence", "config": {"provider": "local"}, "next": "notify"},
        {"id": "notify", "type": "notify", "config": {"driver": "console"}},
    ],
}


def with_changes(change):
    config = copy.deepcopy(VALID)
    change(config)
    return config


def test_valid_definition_has_no_messages():
    assert validate_definition(VALID) == []


def test_validation_does_not_modify_its_input():
    config = copy.deepcopy(VALID)
    validate_definition(config)
    assert config == VALID


def test_spec_messages_for_unknown_type_and_missing_next():
    def change(c):
        c["nodes"][1]["type"] = "ai"
        c["nodes"][2]["next"] = "missing"

    assert validate_definition(with_changes(change)) == [
        "Node 'analyze' has unknown type: ai",
        "Node 'notify' references non-existent next: 'missing'",
    ]


@pytest.mark.parametrize(
    "config, message",
    [
        ([], "Pipeline definition must be a JSON object"),
        ("text", "Pipeline definition must be a JSON object"),
        ({"nodes": VALID["nodes"]}, "Missing required field: version"),
        ({"version": "9.9", "nodes": VALID["nodes"]}, "Unsupported version: 9.9 (supported: 1.0)"),
        ({"version": "1.0"}, "Pipeline has no nodes"),
        ({"version": "1.0", "nodes": []}, "Pipeline has no nodes"),
        ({"version": "1.0", "nodes": {"a": 1}}, "'nodes' must be a list"),
        ({"version": "1.0", "nodes": ["x"]}, "Node #1 must be an object"),
        ({"version": "1.0", "nodes": [{"type": "context"}]}, "Node #1 has no id"),
        ({"version": "1.0", "nodes": [{"id": "a"}]}, "Node 'a' has no type"),
        ({"version": "1.0", "nodes": [{"id": "a", "type": "context", "config": []}]}, "Node 'a' config must be an object"),
        ({"version": "1.0", "nodes": [{"id": "a", "type": "context", "required": "no"}]},
         "Node 'a' field 'required' must be true or false"),
        ({"version": "1.0", "nodes": [{"id": "a", "type": "context", "nxt": "b"}]}, "Node 'a' has unknown field: nxt"),
        ({"version": "1.0", "nodes": [{"id": "a", "type": "context"}], "extra": 1}, "Unknown top-level field: extra"),
        ({"version": "1.0", "defaults": {"timeout_seconds": 0}, "nodes": [{"id": "a", "type": "context"}]},
         "defaults.timeout_seconds must be a positive number"),
        ({"version": "1.0", "defaults": {"max_retries": -1}, "nodes": [{"id": "a", "type": "context"}]},
         "defaults.max_retries must be a whole number of 0 or more"),
        ({"version": "1.0", "defaults": [], "nodes": [{"id": "a", "type": "context"}]}, "'defaults' must be an object"),
    ],
)
def test_shape_problems_are_reported_as_messages(config, message):
    assert message in validate_definition(config)


def test_duplicate_ids_are_reported():
    config = {"version": "1.0", "nodes": [{"id": "a", "type": "context"}, {"id": "a", "type": "context"}]}
    assert "Duplicate node id: 'a'" in validate_definition(config)


def test_cycle_is_reported_with_its_path():
    def change(c):
        c["nodes"][2]["next"] = "analyze"

    assert "Cycle detected: analyze -> notify -> analyze" in validate_definition(with_changes(change))


def test_unreachable_node_is_reported():
    def change(c):
        del c["nodes"][0]["next"]

    messages = validate_definition(with_changes(change))
    assert "Node 'analyze' is unreachable from the first node 'metrics'" in messages
    assert "Node 'notify' is unreachable from the first node 'metrics'" in messages


@pytest.mark.parametrize(
    "index, config, message",
    [
        (0, {"include": ["cpu", "gpu"]}, "Node 'metrics': unknown check: gpu"),
        (0, {"include": ["cpu"], "colour": 1}, "Node 'metrics': unknown option for context node: colour"),
        (1, {"provider": "oracle"}, "Node 'analyze': unknown provider: oracle"),
        (2, {"driver": "pigeon"}, "Node 'notify': unknown driver: pigeon"),
        (2, {"driver": "webhook", "timeout_seconds": "soon"}, None),
    ],
)
def test_node_config_errors_are_reported_by_node_id(index, config, message):
    def change(c):
        c["nodes"][index]["config"] = config

    messages = validate_definition(with_changes(change))
    if message is None:
        assert len(messages) == 1 and messages[0].startswith("Node 'notify': ")
    else:
        assert message in messages


def test_webhook_url_is_not_required_at_validation_time():
    # The worker's environment may provide NOTIFY_WEBHOOK_URL; the CLI's may not.
    def change(c):
        c["nodes"][2]["config"] = {"driver": "webhook"}

    assert validate_definition(with_changes(change)) == []


def test_transform_mapping_is_checked():
    config = {"version": "1.0", "nodes": [{"id": "t", "type": "transform", "config": {"mapping": {"a": "x..y"}}}]}
    assert validate_definition(config) == ["Node 't': mapping 'a' must be a dotted path like 'node_id.field'"]
    config["nodes"][0]["config"] = {}
    assert validate_definition(config) == ["Node 't': 'mapping' must be a non-empty object of key -> dotted path"]


def test_ingest_source_is_checked():
    config = {"version": "1.0", "nodes": [{"id": "i", "type": "ingest", "config": {"source": "carrier-pigeon"}}]}
    [message] = validate_definition(config)
    assert message.startswith("Node 'i': unknown alert source: carrier-pigeon (known: ")


def with_triggers(triggers):
    return {**VALID, "triggers": triggers}


def test_alert_triggers_are_valid_with_and_without_options():
    assert validate_definition(with_triggers([
        {"alert": {"source": "alertmanager"}},
        {"alert": {"source": "grafana", "match": 'alert.severity == "critical" && alert.labels["team"] == "ops"',
                   "on": ["firing", "resolved"], "dedup_seconds": 0}},
        {"alert": {"source": "pagerduty", "on": ["resolved"], "dedup_seconds": 86400}},
    ])) == []


@pytest.mark.parametrize(
    "triggers, message",
    [
        ({"alert": {}}, "'triggers' must be a list"),
        ([{"alert": {"source": "alertmanager", "match": 'alert.severity == "critical" &&'}}],
         "triggers[0].alert.match: line 1, column 30: the expression ends too early"),
        ([{"alert": {"source": "alertmanager"}}, {"alert": {"source": "grafana", "match": 'labels.team == "ops"'}}],
         "triggers[1].alert.match: line 1, column 1: undeclared variable 'labels' (known: alert)"),
        ([{"alert": {"source": "alertmanager", "match": 42}}],
         "triggers[0].alert.match: must be a CEL expression (text), not int"),
        ([{"alert": {"match": "true"}}],
         "triggers[0].alert.source is required (one of: alertmanager, datadog, generic, grafana, pagerduty)"),
        ([{"alert": {"source": "cli"}}],
         "triggers[0].alert.source must be one of: alertmanager, datadog, generic, grafana, pagerduty (not cli)"),
        ([{"alert": {"source": "auto"}}],
         "triggers[0].alert.source must be one of: alertmanager, datadog, generic, grafana, pagerduty (not auto)"),
        ([{"alert": {"source": "alertmanager", "on": []}}], "triggers[0].alert.on must be a non-empty list of: firing, resolved"),
        ([{"alert": {"source": "alertmanager", "on": ["pending"]}}], "triggers[0].alert.on must be a non-empty list of: firing, resolved"),
        ([{"alert": {"source": "alertmanager", "on": "firing"}}], "triggers[0].alert.on must be a non-empty list of: firing, resolved"),
        ([{"alert": {"source": "alertmanager", "on": ["firing", "firing"]}}], "triggers[0].alert.on names a status more than once"),
        ([{"alert": {"source": "alertmanager", "dedup_seconds": -1}}], "triggers[0].alert.dedup_seconds must be a whole number from 0 to 86400"),
        ([{"alert": {"source": "alertmanager", "dedup_seconds": 86401}}], "triggers[0].alert.dedup_seconds must be a whole number from 0 to 86400"),
        ([{"alert": {"source": "alertmanager", "dedup_seconds": 1.5}}], "triggers[0].alert.dedup_seconds must be a whole number from 0 to 86400"),
        ([{"alert": {"source": "alertmanager", "dedup_seconds": True}}], "triggers[0].alert.dedup_seconds must be a whole number from 0 to 86400"),
        ([{"alert": {"source": "alertmanager", "repeat": 3}}], "unknown field in triggers[0].alert: repeat"),
        ([{"webhook": {}}], "triggers[0] must be an object with one key: alert"),
        ([{"alert": {"source": "alertmanager"}, "extra": 1}], "triggers[0] must be an object with one key: alert"),
        (["alert"], "triggers[0] must be an object with one key: alert"),
        ([{"alert": "alertmanager"}], "triggers[0].alert must be an object"),
        ([{"alert": {"source": "alertmanager"}}] * 21, "'triggers' holds 21 triggers; at most 20"),
    ],
)
def test_bad_triggers_are_refused_by_position(triggers, message):
    assert validate_definition(with_triggers(triggers)) == [message]
