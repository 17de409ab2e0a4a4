"""Stopping a node on request with a real signal to this process's main thread
(the thread a worker's pool process executes nodes in)."""
import signal
import threading
import time

import pytest

from apps.orchestration.interrupt import INTERRUPT_SIGNAL, INTERRUPTED_ERROR, NodeInterrupt, NodeInterrupted
from apps.orchestration.timelimit import node_time_limit

# Far beyond any wait of these tests: a node that ends by itself fails them.
NODE_SECONDS = 60


def request_once_running(interrupt: NodeInterrupt, sent: list) -> threading.Thread:
    """A thread that asks for the node to be stopped once it is running (as the heartbeat does)."""

    def ask():
        deadline = time.monotonic() + NODE_SECONDS
        while not interrupt._running and time.monotonic() < deadline:
            time.sleep(0.01)
        sent.append(interrupt.request())

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    return thread


def test_a_request_interrupts_a_node_asleep_in_the_main_thread_and_the_handler_is_put_back():
    before = signal.getsignal(INTERRUPT_SIGNAL)
    interrupt, sent = NodeInterrupt(), []
    asker = request_once_running(interrupt, sent)
    started = time.monotonic()
    with pytest.raises(NodeInterrupted, match=f"^{INTERRUPTED_ERROR}$"):
        with interrupt.node():
            time.sleep(NODE_SECONDS)
    took = time.monotonic() - started
    asker.join(10)
    assert sent == [True]
    assert took < NODE_SECONDS / 2
    assert signal.getsignal(INTERRUPT_SIGNAL) == before


def test_a_request_between_nodes_sends_nothing_and_stops_the_next_node_as_it_starts():
    interrupt = NodeInterrupt()
    with interrupt.node():
        pass
    before = signal.getsignal(INTERRUPT_SIGNAL)
    # Between nodes: no signal (with no handler installed it would end this process).
    assert interrupt.request() is False
    ran = []
    with pytest.raises(NodeInterrupted):
        with interrupt.node():
            ran.append(True)
    assert ran == []
    assert signal.getsignal(INTERRUPT_SIGNAL) == before


def test_a_node_that_ends_by_itself_is_not_interrupted_afterwards():
    interrupt = NodeInterrupt()
    with interrupt.node():
        time.sleep(0.01)
    interrupt.close()
    assert interrupt.request() is False  # the run has ended: nothing is sent
    time.sleep(0.05)  # nothing pending either: this test goes on


def test_a_node_outside_the_main_thread_runs_to_its_end():
    interrupt, outcome = NodeInterrupt(), []

    def node():
        with interrupt.node():
            interrupt.request()
            outcome.append("ended")

    thread = threading.Thread(target=node)
    thread.start()
    thread.join(10)
    assert outcome == ["ended"]


def test_a_node_interrupted_inside_its_time_limit_leaves_no_timer_or_handler_behind():
    alarm_before, interrupt_before = signal.getsignal(signal.SIGALRM), signal.getsignal(INTERRUPT_SIGNAL)
    interrupt, sent = NodeInterrupt(), []
    asker = request_once_running(interrupt, sent)
    # As the engine nests them: the stop request inside the node's time limit.
    with pytest.raises(NodeInterrupted):
        with node_time_limit(NODE_SECONDS), interrupt.node():
            time.sleep(NODE_SECONDS)
    asker.join(10)
    assert sent == [True]
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) == alarm_before
    assert signal.getsignal(INTERRUPT_SIGNAL) == interrupt_before
