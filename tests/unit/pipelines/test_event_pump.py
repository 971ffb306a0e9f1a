"""pipelines.event_pump.Pump with in-process queues that answer like Ray's (``get(block, timeout)``,
``Empty`` when nothing comes): every item reaches its handler, in order, before ``run`` returns;
only the first queue is waited on; ``fit``'s result and exception come back to the caller."""
from __future__ import annotations

import queue as stdlib_queue
import threading
import time

import pytest
from ray.util.queue import Empty

from pipelines.event_pump import Pump


class FakeQueue:
    """A thread-safe queue with Ray's ``Queue.get`` signature; records each request's wait."""

    def __init__(self):
        self.items: stdlib_queue.Queue = stdlib_queue.Queue()
        self.waits: list[float | None] = []
        self.actor = None  # what kill_actor looks up; killing nothing is ignored

    def put(self, item) -> None:
        self.items.put(item)

    def get(self, block: bool = True, timeout: float | None = None):
        self.waits.append(timeout if block else None)
        try:
            return self.items.get(block=block, timeout=timeout)
        except stdlib_queue.Empty:
            raise Empty from None


def test_every_item_reaches_its_handler_in_order_before_run_returns():
    events, reports = FakeQueue(), FakeQueue()
    seen_events, seen_reports = [], []

    def fit():
        for i in range(5):
            events.put(i)
            reports.put(f"r{i}")
            time.sleep(0.01)
        events.put("last")  # queued just before fit returns: still handed over
        return "done"

    assert Pump(fit, [(events, seen_events.append), (reports, seen_reports.append)], wait_s=0.05).run() == "done"
    assert seen_events == [0, 1, 2, 3, 4, "last"]
    assert seen_reports == [f"r{i}" for i in range(5)]


def test_only_the_first_queue_is_waited_on():
    events, reports = FakeQueue(), FakeQueue()
    Pump(lambda: time.sleep(0.2), [(events, print), (reports, print)], wait_s=0.05).run()
    assert 0.05 in events.waits and set(events.waits) <= {0.05, None}
    assert set(reports.waits) == {None}  # never blocks: the first queue's wait paces the loop
    assert len([w for w in events.waits if w]) <= 0.2 / 0.05 + 3  # no busy polling while nothing comes


def test_an_item_ends_the_wait_at_once():
    events = FakeQueue()
    put_at, handled_at = [], []

    def fit():
        time.sleep(0.2)  # the pump is inside its wait by now
        put_at.append(time.perf_counter())
        events.put("x")

    Pump(fit, [(events, lambda item: handled_at.append(time.perf_counter()))], wait_s=2).run()
    assert handled_at[0] - put_at[0] < 1  # handed over as it came, not after the 2 s wait


def test_fit_exception_is_raised_in_the_caller_after_the_queues_are_drained():
    events = FakeQueue()
    seen = []

    def fit():
        events.put("before the crash")
        raise ValueError("worker failed")

    with pytest.raises(ValueError, match="worker failed"):
        Pump(fit, [(events, seen.append)], wait_s=0.05).run()
    assert seen == ["before the crash"]


def test_on_abandon_runs_when_a_handler_stops_the_pump_while_fit_runs():
    events = FakeQueue()
    release, abandoned = threading.Event(), []

    def fit():
        events.put("stop")
        release.wait(5)

    def handle(item):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Pump(fit, [(events, handle)], on_abandon=lambda: abandoned.append(True), wait_s=0.05).run()
    release.set()
    assert abandoned == [True]
