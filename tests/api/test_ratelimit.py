"""The per-key rate limit (API_RATE_LIMIT): 429 with Retry-After past it, per key, counted in
the broker's Redis (shared by every web process) or in memory with the embedded broker."""
import pytest
import redis

from apps.api import ratelimit
from apps.api.models import ApiKey
from tests.support import claim_redis_db, require_redis

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_counters():
    ratelimit._limiter.cache_clear()
    yield
    ratelimit._limiter.cache_clear()


def get(api):
    return api.get("/api/v1/definitions")


def test_rate_limit_answers_429_with_retry_after_past_the_rate(settings, api_client):
    settings.CELERY_BROKER_URL = "redis+socket:///nowhere/redis.sock"  # the embedded broker: counted in memory
    settings.API_RATE_LIMIT = "3/minute"
    busy, other = api_client("runs:read"), api_client("runs:read")
    assert [get(busy).status_code for _ in range(3)] == [200, 200, 200]
    refused = get(busy)
    assert refused.status_code == 429
    assert refused.json() == {"error": "Too many requests for this API key (API_RATE_LIMIT); retry after Retry-After seconds"}
    assert 1 <= int(refused["Retry-After"]) <= 60
    # Counted per key.
    assert get(other).status_code == 200


def test_rate_limit_with_a_burst_window(settings, api_client):
    settings.CELERY_BROKER_URL = ""
    settings.API_RATE_LIMIT = "2/second;4/minute"
    api = api_client("runs:read")
    codes = [get(api).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_a_request_one_rate_refuses_is_charged_to_none_of_the_others(settings, api_client):
    settings.CELERY_BROKER_URL = ""
    settings.API_RATE_LIMIT = "3/minute;2/minute"
    api = api_client("runs:read")
    assert [get(api).status_code for _ in range(4)] == [200, 200, 429, 429]
    [key] = ApiKey.objects.all()
    wider = ratelimit.rate_items(settings.API_RATE_LIMIT)[0]
    # Two requests were let through: the refused ones left the wider rate one request to spare.
    assert ratelimit._limiter("").get_window_stats(wider, "key", str(key.pk)).remaining == 1


def test_rate_limit_off(settings, api_client):
    settings.CELERY_BROKER_URL = ""
    for off in ("off", "0", ""):
        settings.API_RATE_LIMIT = off
        api = api_client("runs:read")
        assert {get(api).status_code for _ in range(20)} == {200}


def test_rate_limit_refused_keys_are_not_counted(settings, api_client, client):
    settings.CELERY_BROKER_URL = ""
    settings.API_RATE_LIMIT = "1/minute"
    for _ in range(5):
        assert client.get("/api/v1/definitions", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert get(api_client("runs:read")).status_code == 200


def test_rate_limit_is_shared_through_the_brokers_redis(settings, api_client):
    require_redis()
    url = claim_redis_db()
    try:
        settings.CELERY_BROKER_URL = url
        settings.API_RATE_LIMIT = "2/minute"
        api = api_client("runs:read")
        assert get(api).status_code == 200
        ratelimit._limiter.cache_clear()  # as another web process would: a limiter of its own
        assert get(api).status_code == 200
        ratelimit._limiter.cache_clear()
        assert get(api).status_code == 429
        keys = [key.decode() for key in redis.Redis.from_url(url).scan_iter() if key != b"pipelines-test-claim"]
        assert keys and all(key.startswith("pipelines-api-rl:") for key in keys)
    finally:
        redis.Redis.from_url(url).flushdb()


def test_rate_limit_lets_requests_through_when_redis_is_down(settings, api_client, apps_log):
    settings.CELERY_BROKER_URL = "redis://:topsecret@127.0.0.1:1/0"
    settings.API_RATE_LIMIT = "1/minute"
    api = api_client("runs:read")
    assert [get(api).status_code for _ in range(2)] == [200, 200]
    logged = apps_log.text
    assert "event=api.rate_limit_unavailable error=ConnectionError" in logged
    assert "topsecret" not in logged
