"""The openai provider against a real HTTP server, and the fallback to local."""
from __future__ import annotations

import json
import time

import pytest

from apps.intelligence.base import providers
from apps.intelligence.providers.local import LocalProvider
from apps.intelligence.providers.openai import OpenAIProvider
from apps.intelligence.services import analysis_run, analysis_validate
from tests.httpserver import start_dribbling_server

KEY = "sk-test-0123456789"

DISK_WARNING = {
    "name": "disk", "status": "warning", "value": 91.4, "unit": "%",
    "message": "disk 91.4% (warning)", "details": {"path": "/var"},
}
CPU_OK = {"name": "cpu", "status": "ok", "value": 12.3, "unit": "%", "message": "cpu 12.3% (ok)", "details": {}}
INCIDENT = {
    "id": 7, "title": "Disk filling up on web-01", "severity": "warning", "status": "open",
    "alerts": [{
        "name": "DiskSpaceLow", "host": "web-01", "severity": "warning", "status": "firing",
        "description": "/var is above 90%", "labels": {"mountpoint": "/var"},
    }],
}
ANALYSIS = {
    "summary": "Disk /var on web-01 is 91.4% full.",
    "probable_cause": "Logs growing without rotation.",
    "recommendations": ["Rotate the logs in /var/log.", "Grow the /var volume."],
    "severity": "Warning",
}


def completion(content: str) -> dict:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    }


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    return KEY


def run(server, **config) -> dict:
    config = {"provider": "openai", "base_url": server.url("/v1"), **config}
    return analysis_run(provider="openai", config=config, incident=INCIDENT, checks=[CPU_OK, DISK_WARNING])


def local_analysis() -> dict:
    return LocalProvider().analyze(incident=INCIDENT, checks=[CPU_OK, DISK_WARNING], config={})


def assert_fell_back(output: dict, reason: str) -> None:
    assert output["fallback_reason"] == reason
    assert output["provider"] == "local"
    assert output["requested_provider"] == "openai"
    assert output["fallback_used"] is True
    expected = local_analysis()
    for field in ("summary", "probable_cause", "recommendations", "severity", "findings"):
        assert output[field] == expected[field]
    assert KEY not in json.dumps(output)


def test_openai_is_registered():
    assert providers.get("openai") is OpenAIProvider


def test_a_good_answer_is_parsed_and_the_request_carries_model_key_and_findings(http_server, api_key):
    http_server.answer_json(completion(json.dumps(ANALYSIS)))
    output = run(http_server, model="llama3.1:8b", required=False)

    assert output == {
        "summary": "Disk /var on web-01 is 91.4% full.",
        "probable_cause": "Logs growing without rotation.",
        "recommendations": ["Rotate the logs in /var/log.", "Grow the /var volume."],
        "severity": "warning",
        "provider": "openai",
        "model": "llama3.1:8b",
        "fallback_used": False,
    }
    assert len(http_server.requests) == 1
    request = http_server.last
    assert request["method"] == "POST"
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == f"Bearer {KEY}"
    body = request["json"]
    assert body["model"] == "llama3.1:8b"
    assert body["temperature"] == 0.2
    assert body["response_format"] == {"type": "json_object"}
    assert "max_tokens" not in body
    system, user = body["messages"]
    assert system["role"] == "system" and '"severity"' in system["content"]
    assert user["role"] == "user"
    assert "Disk filling up on web-01" in user["content"]
    assert "DiskSpaceLow" in user["content"] and '"mountpoint":"/var"' in user["content"]
    assert '"value":91.4' in user["content"] and "disk 91.4% (warning)" in user["content"]
    assert '"name":"cpu"' in user["content"]
    assert KEY not in json.dumps(output)


def test_defaults_come_from_the_environment_and_max_tokens_is_sent(http_server, monkeypatch):
    monkeypatch.setenv("TEAM_LLM_KEY", "sk-team-abcdef123456")
    monkeypatch.setenv("OPENAI_BASE_URL", http_server.url("/openai/v1/"))
    monkeypatch.setenv("OPENAI_MODEL", "qwen2.5")
    http_server.answer_json(completion(json.dumps(ANALYSIS)))
    output = analysis_run(
        provider="openai", config={"api_key_env": "TEAM_LLM_KEY", "max_tokens": 400},
        incident=None, checks=[DISK_WARNING],
    )
    assert output["provider"] == "openai" and output["model"] == "qwen2.5"
    request = http_server.last
    assert request["path"] == "/openai/v1/chat/completions"
    assert request["headers"]["authorization"] == "Bearer sk-team-abcdef123456"
    assert request["json"]["model"] == "qwen2.5"
    assert request["json"]["max_tokens"] == 400
    assert '"incident":null' in request["json"]["messages"][1]["content"]


def test_an_answer_in_a_markdown_code_block_is_parsed(http_server, api_key):
    http_server.answer_json(completion("```json\n" + json.dumps({**ANALYSIS, "severity": "error"}) + "\n```"))
    output = run(http_server)
    assert output["provider"] == "openai"
    assert output["summary"] == ANALYSIS["summary"]
    assert output["severity"] == "critical"


def test_http_500_falls_back_to_local(http_server, api_key):
    http_server.answer_json({"error": {"message": f"Incorrect API key provided: {KEY}"}}, status=500)
    output = run(http_server)
    assert_fell_back(output, "HTTP 500")
    assert len(http_server.requests) == 1


def test_a_slow_answer_falls_back_after_the_timeout(http_server, api_key):
    http_server.slow = True
    http_server.answer_json(completion(json.dumps(ANALYSIS)))
    started = time.monotonic()
    output = run(http_server, timeout_seconds=0.3)
    assert time.monotonic() - started < 5
    assert_fell_back(output, "timeout after 0.3s")


def test_an_answer_sent_a_byte_at_a_time_falls_back_at_the_timeout(settings, api_key):
    settings.OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    server, stop = start_dribbling_server(phase="body", size=60, interval=0.5)
    try:
        output = run(server, timeout_seconds=1)
        sent = server.sent
    finally:
        stop()
    assert_fell_back(output, "timeout after 1s")
    assert server.requests == 1
    assert sent < server.size // 2, f"the call went on while the server sent {sent} of {server.size} bytes"


@pytest.mark.parametrize(
    "answer, reason",
    [
        (completion("The disk is full, rotate the logs."), "unparseable answer: the content is not JSON"),
        (completion('{"summary": "Disk full", "probable_cause": "logs"'), "unparseable answer: the content is not JSON"),
        (completion("[1, 2]"), "unparseable answer: the content is not a JSON object"),
        (completion(json.dumps({k: v for k, v in ANALYSIS.items() if k != "probable_cause"})),
         "unparseable answer: probable_cause is missing"),
        (completion(json.dumps({**ANALYSIS, "summary": ""})), "unparseable answer: summary is not a non-empty string"),
        (completion(json.dumps({**ANALYSIS, "recommendations": "Rotate the logs."})),
         "unparseable answer: recommendations is not a list of strings"),
        (completion(json.dumps({**ANALYSIS, "severity": "bad"})),
         "unparseable answer: severity is not ok, warning or critical"),
        (completion(json.dumps({**ANALYSIS, "severity": 2})),
         "unparseable answer: severity is not ok, warning or critical"),
        ({"choices": []}, "unparseable answer: no choices[0].message.content"),
        ({"error": "overloaded"}, "unparseable answer: no choices[0].message.content"),
    ],
)
def test_an_unusable_answer_falls_back_to_local(http_server, api_key, answer, reason):
    http_server.answer_json(answer)
    assert_fell_back(run(http_server), reason)


def test_a_body_that_is_not_json_falls_back_to_local(http_server, api_key):
    http_server.answer_raw(b"<html>Bad gateway</html>", content_type="text/html")
    assert_fell_back(run(http_server), "unparseable answer: the response body is not JSON")


def test_a_missing_key_falls_back_without_calling_the_provider(http_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    output = run(http_server)
    assert_fell_back(output, "No OpenAI API key: set OPENAI_API_KEY (or the node's api_key_env) in the environment of the workers")
    assert http_server.requests == []


def test_a_named_key_variable_that_is_unset_is_named_in_the_reason(http_server, api_key, monkeypatch):
    monkeypatch.delenv("TEAM_LLM_KEY", raising=False)
    output = run(http_server, api_key_env="TEAM_LLM_KEY")
    assert_fell_back(output, "No OpenAI API key: set TEAM_LLM_KEY (named by the node's api_key_env) in the environment of the workers")
    assert http_server.requests == []


def test_a_loopback_url_outside_the_allow_list_falls_back_without_a_request(http_server, api_key, settings):
    settings.OUTBOUND_ALLOW_HOSTS = []
    output = run(http_server)
    assert_fell_back(
        output,
        "call refused: address 127.0.0.1 is not a public address; "
        "allow it with OUTBOUND_ALLOW_HOSTS",
    )
    assert http_server.requests == []


def test_a_closed_port_falls_back_naming_only_the_host(api_key, settings):
    settings.OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    output = analysis_run(
        provider="openai", config={"base_url": "http://127.0.0.1:9/v1?token=abc"},
        incident=INCIDENT, checks=[CPU_OK, DISK_WARNING],
    )
    assert_fell_back(output, "cannot reach 127.0.0.1 (ConnectError)")


def test_an_answer_larger_than_the_limit_falls_back(http_server, api_key):
    http_server.answer_raw(b" " * (2 * 1024 * 1024), content_type="application/json")
    assert_fell_back(run(http_server), "the answer from 127.0.0.1 is larger than 1048576 bytes")


def test_a_base_url_with_a_malformed_port_falls_back_without_the_port_text(api_key, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "https://llm.example:sk-in-the-port/v1")
    output = analysis_run(provider="openai", config={}, incident=INCIDENT, checks=[CPU_OK, DISK_WARNING])
    assert_fell_back(output, "call refused: the URL for host llm.example has a malformed port")
    assert "sk-in-the-port" not in json.dumps(output)


def test_a_base_url_with_a_malformed_port_in_the_config_is_reported():
    assert analysis_validate(config={"provider": "openai", "base_url": "http://llm.example:x/v1"}) == [
        "base_url must be a URL starting with http:// or https://"
    ]
    assert analysis_validate(config={"provider": "openai", "base_url": "http://[::1/v1"}) == [
        "base_url must be a URL starting with http:// or https://"
    ]


def test_secrets_echoed_by_the_provider_are_scrubbed(http_server, api_key):
    http_server.answer_json(completion(json.dumps({**ANALYSIS, "summary": f"Your key is {KEY}"})))
    output = run(http_server)
    assert output["provider"] == "openai"
    assert output["summary"] == "Your key is [redacted]"
    assert KEY not in json.dumps(output)


def test_known_secrets_in_the_findings_are_not_sent(http_server, api_key, monkeypatch):
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T0/B0/secret-token")
    http_server.answer_json(completion(json.dumps(ANALYSIS)))
    leaky = {**INCIDENT, "title": "Cannot post to https://hooks.slack.com/services/T0/B0/secret-token"}
    analysis_run(provider="openai", config={"base_url": http_server.url("/v1")}, incident=leaky, checks=[])
    sent = http_server.last["body"].decode()
    assert "secret-token" not in sent
    assert "Cannot post to [redacted]" in sent


@pytest.mark.parametrize(
    "config, messages",
    [
        ({"provider": "openai"}, []),
        ({"provider": "openai", "required": False, "base_url": "http://localhost:11434/v1", "model": "llama3.1",
          "timeout_seconds": 2.5, "api_key_env": "OLLAMA_KEY", "max_tokens": 800}, []),
        ({"provider": "openai", "api_key": "sk-live-123456"}, [
            "api_key is a secret and must not be written in the definition: "
            "put it in an environment variable and name it with api_key_env",
        ]),
        ({"provider": "openai", "temperature": 0.5, "api_base": "x"}, [
            "unknown option for provider openai: api_base",
            "unknown option for provider openai: temperature",
        ]),
        ({"provider": "openai", "base_url": "api.openai.com/v1"},
         ["base_url must be a URL starting with http:// or https://"]),
        ({"provider": "openai", "base_url": "ftp://models.internal/v1"},
         ["base_url must be a URL starting with http:// or https://"]),
        ({"provider": "openai", "base_url": 3}, ["base_url must be a URL starting with http:// or https://"]),
        ({"provider": "openai", "model": " "}, ["model must be a non-empty string"]),
        ({"provider": "openai", "timeout_seconds": 0}, ["timeout_seconds must be a positive number"]),
        ({"provider": "openai", "timeout_seconds": "30"}, ["timeout_seconds must be a positive number"]),
        ({"provider": "openai", "timeout_seconds": True}, ["timeout_seconds must be a positive number"]),
        ({"provider": "openai", "max_tokens": 0}, ["max_tokens must be a positive whole number"]),
        ({"provider": "openai", "max_tokens": 1.5}, ["max_tokens must be a positive whole number"]),
        ({"provider": "openai", "api_key_env": ""}, ["api_key_env must name an environment variable"]),
        ({"provider": "openai", "api_key_env": "OPENAI_API_KEY=sk-1"}, ["api_key_env must name an environment variable"]),
    ],
)
def test_openai_config_validation(config, messages, monkeypatch):
    # A missing key is the worker's business, not the definition's.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert analysis_validate(config=config) == messages


def test_analysis_run_refuses_an_inline_key_before_any_request(http_server, api_key):
    with pytest.raises(ValueError) as excinfo:
        run(http_server, api_key="sk-live-123456")
    assert str(excinfo.value).startswith("api_key is a secret and must not be written in the definition")
    assert http_server.requests == []
