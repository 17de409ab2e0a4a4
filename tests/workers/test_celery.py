"""The worker's housekeeping in workers/celery.py: the timer compaction, on
kombu's own timer and in a real worker."""
import re

import pytest
from kombu.asynchronous.timer import Timer

from apps.orchestration.models import PipelineDefinition, PipelineRun
from tests.support import wait_for
from workers.celery import timer_drop_cancelled

COMPACTED = re.compile(r"event=worker\.timer_compacted dropped=(\d+) kept=(\d+)")


def fired(timer: Timer) -> list:
    """Every entry ``timer`` would fire now, in the order it fires them (running each)."""
    calls = []
    for _wait, entry in timer:
        if entry is None:
            return calls
        calls.append(entry())
    return calls


def test_cancelled_entries_are_dropped_and_the_others_still_fire_in_order():
    timer = Timer()
    entries = [timer.call_at(eta, lambda eta=eta: eta) for eta in (9.0, 3.0, 7.0, 1.0, 5.0, 2.0)]
    for entry in entries[::2]:  # etas 9, 7 and 5
        entry.cancel()
    queue = timer._queue

    assert timer_drop_cancelled(timer) == (3, 3)

    assert timer._queue is queue  # the event loop's own list, changed in place
    assert sorted(item.eta for item in queue) == [1.0, 2.0, 3.0]
    assert fired(timer) == [1.0, 2.0, 3.0]


def test_a_timer_with_nothing_cancelled_is_left_as_it_is():
    timer = Timer()
    for eta in (4.0, 2.0, 3.0):
        timer.call_at(eta, lambda eta=eta: eta)
    before = list(timer._queue)

    assert timer_drop_cancelled(timer) == (0, 3)
    assert timer._queue == before
    assert fired(timer) == [2.0, 3.0, 4.0]


def test_an_entry_added_after_a_compaction_takes_its_place_in_the_order():
    timer = Timer()
    late = timer.call_at(8.0, lambda: 8.0)
    timer.call_at(6.0, lambda: 6.0)
    late.cancel()
    timer_drop_cancelled(timer)
    timer.call_at(1.0, lambda: 1.0)

    assert fired(timer) == [1.0, 6.0]


@pytest.mark.subprocess
def test_a_worker_drops_the_time_limits_of_the_tasks_it_finished(cli, start_worker, transactional_db):
    # Each run's task gets a time-limit timer in the main process, cancelled when it ends.
    worker = start_worker(WORKER_TIMER_COMPACT_SECONDS="1", LOG_LEVEL="DEBUG")
    PipelineDefinition.objects.create(name="quick", config={
        "version": "1.0", "nodes": [{"id": "t", "type": "transform", "config": {"mapping": {"x": "payload.x"}}}],
    })
    for _ in range(3):
        result = cli("run_pipeline", "--definition", "quick", "--payload", '{"x": 1}', "--wait")
        assert result.exit_code == 0, result.stderr
    assert PipelineRun.objects.filter(status=PipelineRun.Status.COMPLETED).count() == 3

    def dropped() -> int:
        return sum(int(found[0]) for found in COMPACTED.findall(worker.log()))

    # The compactions after the third run's end have dropped all three (bounded wait).
    try:
        wait_for(lambda: dropped() >= 3, what="the three runs' timers dropped")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the worker's log ends:\n{worker.log()[-3000:]}") from None
