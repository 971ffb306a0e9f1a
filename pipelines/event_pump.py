"""The one event pump of igan's drivers: run a blocking Ray call (``TorchTrainer.fit``) in a thread
while this thread handles what the workers send through Ray queues, so MLflow and Tune calls stay in
the caller's thread."""
from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

from pipelines.ray_runtime import kill_actor


class Pump:
    """``Pump(fit, [(queue, handler), ...]).run()`` calls ``fit()`` in a thread and hands every
    item of each queue to its handler until ``fit`` has returned and the queues are empty.
    ``on_abandon`` runs when the pump is left while ``fit`` still runs (the caller was stopped,
    e.g. Tune ended the trial). The queues' actors are killed at the end.

    The pump keeps one blocking request on the first queue (answered as soon as an item comes, else
    after ``wait_s``) rather than polling: every request is a round trip to the queue's actor, and
    on a small machine frequent polling takes CPU from the training it reports on."""

    def __init__(self, fit: Callable[[], Any], routes: Sequence[tuple[Any, Callable[[Any], None]]],
                 on_abandon: Callable[[], None] | None = None, name: str = "igan-fit", wait_s: float = 1.0):
        self.fit, self.routes, self.on_abandon, self.name, self.wait_s = fit, list(routes), on_abandon, name, wait_s
        self.box: dict[str, Any] = {}

    def _target(self) -> None:
        try:
            self.box["result"] = self.fit()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            self.box["error"] = exc

    def run(self) -> Any:
        """``fit()``'s return value; re-raises its exception."""
        from ray.util.queue import Empty

        thread = threading.Thread(target=self._target, name=self.name, daemon=True)
        thread.start()
        try:
            while True:
                alive = thread.is_alive()
                busy = False
                for i, (queue, handle) in enumerate(self.routes):
                    for item in _take(queue, Empty, self.wait_s if i == 0 else 0.0):  # the first paces the loop
                        busy = True
                        handle(item)
                if not alive and not busy:
                    break
        finally:
            if thread.is_alive() and self.on_abandon is not None:
                self.on_abandon()
            for queue, _ in self.routes:
                kill_actor(queue)
        if "error" in self.box:
            raise self.box["error"]
        return self.box["result"]


def _take(queue, empty_exc, wait_s: float) -> list:
    """Every item ``queue`` holds now; with ``wait_s`` > 0, first waits up to that many seconds for
    one to come (none: an empty list)."""
    out = []
    if wait_s > 0:
        try:
            out.append(queue.get(block=True, timeout=wait_s))
        except empty_exc:
            return out
    while True:
        try:
            out.append(queue.get(block=False))
        except empty_exc:
            return out


def driver_queue(ray):
    """A Ray queue that lives on the driver's node (losing a worker node must not lose the driver's
    events) and reserves no CPU."""
    from ray.util.queue import Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
