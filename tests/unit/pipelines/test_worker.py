"""The Ray Train worker's messages (pipelines.worker): rank 0's events, ``log`` events from any rank,
igan's own warnings forwarded and others' left alone (no Ray needed)."""
from __future__ import annotations

import warnings
from pathlib import Path

import igan
from igan.loop import StepStats
from pipelines.worker import Events, forward_warnings, step_reporter


class _Queue:
    def __init__(self):
        self.items = []

    def put(self, item):
        self.items.append(item)


def test_only_rank0_sends_events_but_every_rank_logs():
    q = _Queue()
    Events(q, rank=1).send("epoch", epoch=1)
    Events(q, rank=1).log("ERROR", "boom")
    Events(q, rank=0).send("done", step=3)
    assert q.items == [{"kind": "log", "rank": 1, "level": "ERROR", "message": "boom"},
                       {"kind": "done", "step": 3}]


def test_step_events_sum_images_over_the_ranks():
    q = _Queue()
    step_reporter(Events(q, 0), world=4)(StepStats(10, 0, 10, 20, {"loss_d": 1.0}, 250.0, 0.4, 0.05))
    (ev,) = q.items
    assert ev["kind"] == "step" and ev["images_per_s"] == 1000.0 and ev["step"] == 10 and ev["batches"] == 20


def test_igan_warnings_go_to_the_driver_others_stay():
    q, others = _Queue(), []
    saved = warnings.showwarning
    try:
        warnings.showwarning = lambda message, *rest, **kw: others.append(str(message))  # the worker's default
        forward_warnings(Events(q, rank=2))
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            ours = str(Path(igan.__file__).parent / "metrics" / "fid.py")
            warnings.warn_explicit("sqrtm has an imaginary part", RuntimeWarning, ours, 45)
            warnings.warn_explicit("not ours", UserWarning, "/elsewhere/lib.py", 1)
    finally:
        warnings.showwarning = saved
    assert q.items == [{"kind": "log", "rank": 2, "level": "WARNING",
                        "message": "RuntimeWarning: sqrtm has an imaginary part"}]
    assert others == ["not ours"]
