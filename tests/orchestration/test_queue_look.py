"""The sweep's look into a Redis queue (dispatch.runs_waiting): with a healthy backlog it
reads about as many messages as runs it asks about, never the whole queue; a run whose
message is gone anywhere in the queue is still reported, and the sweep re-sends exactly
those runs. Real messages, sent by the launcher in a child process to a real Redis."""
from __future__ import annotations

import json

import pytest
import redis

from apps.broker import redis_adapter
from apps.orchestration import dispatch
from apps.orchestration.models import PipelineDefinition, PipelineRun
from tests.support import TINY_NODES, claim_redis_db, require_redis

BACKLOG = 600


@pytest.fixture
def backlog(manage, settings):
    """BACKLOG runs queued through the launcher on a claimed Redis database, oldest first;
    this process reads that database as the sweep does."""
    require_redis()
    url = claim_redis_db()
    settings.CELERY_BROKER_URL = url
    PipelineDefinition.objects.create(name="tiny", config={"version": "1.0", "nodes": TINY_NODES})
    launch = (
        "from apps.orchestration import inputs, launch, launchrequest\n"
        "request = launchrequest.LaunchRequest(resolved=inputs.definition_resolve(name='tiny'), payload={})\n"
        f"for _ in range({BACKLOG}): launch.pipeline_run_launch(request=request)\n"
    )
    result = manage("shell", "-c", launch, env={"CELERY_BROKER_URL": url})
    assert result.exit_code == 0, result.stderr
    client = redis.Redis.from_url(url)
    try:
        yield client, url, list(PipelineRun.objects.order_by("pk").values_list("pk", flat=True))
    finally:
        client.flushdb()


def drop_message(client: redis.Redis, run_id: int) -> None:
    queue = dispatch.run_queue()
    [raw] = [m for m in client.lrange(queue, 0, -1) if dispatch._run_id_of(m) == run_id]
    assert client.lrem(queue, 1, raw) == 1


def test_message_task_id_reads_the_id_kombu_stored_without_decoding_the_message(backlog):
    client, _url, ids = backlog
    raw = client.lrange(dispatch.run_queue(), -1, -1)[0]
    task_id = json.loads(raw)["headers"]["id"]
    assert redis_adapter.message_task_id(raw) == task_id and task_id.startswith(f"run-{ids[0]}-")
    # Text a header holds cannot pass for the id: its quotes are escaped.
    assert redis_adapter.message_task_id(json.dumps({"headers": {"argsrepr": '"id": "run-9-x"'}}).encode()) is None


def test_the_oldest_runs_are_found_at_the_tail_without_reading_the_backlog(backlog):
    _client, _url, ids = backlog
    oldest = set(ids[:100])
    look = dispatch.runs_waiting(runs={"": oldest})
    assert look is not None and look.found == oldest
    assert look.read <= dispatch.TAIL_MIN * len(redis_adapter.queue_keys(dispatch.run_queue()))
    assert look.read < BACKLOG / 2
    # The same answer as reading every message.
    assert dispatch.queued_run_ids() == set(ids)


def test_runs_whose_messages_are_gone_anywhere_in_the_queue_are_reported(backlog):
    client, _url, ids = backlog
    gone = {ids[0], ids[BACKLOG // 2], ids[-1]}
    for run_id in gone:
        drop_message(client, run_id)
    asked = set(ids[:50]) | gone
    look = dispatch.runs_waiting(runs={"": asked})
    assert look is not None and look.found == asked - gone
    # Not found in the tail: the whole queue was read once more, as one snapshot.
    assert look.read >= BACKLOG - len(gone)
    # A host queue with no messages: none of its runs is found, nothing needs reading.
    empty = dispatch.runs_waiting(runs={"web-01": {ids[1]}})
    assert empty is not None and (empty.found, empty.read) == (set(), 0)


def test_the_sweep_re_sends_exactly_the_runs_whose_messages_were_lost_and_then_nothing(backlog, manage):
    client, url, ids = backlog
    lost = [ids[3], ids[40]]
    for run_id in lost:
        drop_message(client, run_id)
    first = manage("recover_runs", "--grace", "0", env={"CELERY_BROKER_URL": url})
    assert first.exit_code == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[-1] == "2 run(s) re-sent" and [int(line.split()[2]) for line in lines[:-1]] == lost
    again = manage("recover_runs", "--grace", "0", env={"CELERY_BROKER_URL": url})
    assert again.stdout == "0 run(s) re-sent\n"
    assert dispatch.queued_run_ids() == set(ids) and client.llen(dispatch.run_queue()) == BACKLOG
