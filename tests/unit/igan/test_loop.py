"""The one training loop (igan.loop): per-step statistics every ``train.log_every`` steps, the
hooks' seam, and stopping at ``max_steps``."""
from __future__ import annotations

import pytest
import torch

from igan.config import apply_overrides
from igan.data.feed import MemoryFeed
from igan.data.memory import load_embedded
from igan.loop import StepMeter, train_epochs
from igan.presets import get_preset
from igan.trainer import Trainer

TINY = ["model.d_widths=[16,8]", "model.g_widths=[16]", "train.epochs=2", "train.steps_per_epoch=5",
        "train.log_every=2", "techniques.wn_init_examples=100"]


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    cfg = apply_overrides(get_preset("digits"), TINY)
    feed = MemoryFeed(load_embedded(cfg, "train"), cfg)
    return cfg, feed


def test_on_step_every_log_every_steps(setup):
    cfg, feed = setup
    stats = []
    trainer = Trainer(cfg, init_batch=feed.init_batch(), device="cpu")
    result = train_epochs(trainer, feed, cfg, on_step=stats.append)
    assert result.status == "finished" and result.step == 10
    assert [s.step for s in stats] == [2, 4, 6, 8, 10]
    assert [(s.epoch, s.batch) for s in stats] == [(0, 2), (0, 4), (1, 1), (1, 3), (1, 5)]
    assert all(s.batches == 5 for s in stats)
    for s in stats:
        assert s.images_per_s > 0 and s.step_time_s > 0 and 0.0 <= s.data_wait_fraction <= 1.0
        assert set(s.losses) == {"loss_d", "loss_g", "loss_lab", "loss_unl"}


def test_step_meter_window_means_and_rates():
    seen = []
    meter = StepMeter(every=2, on_step=seen.append, epoch=0, batch=0, batches=4)
    meter.record(1, {"loss": 1.0}, images=100, wait_s=0.1, total_s=0.5)
    assert seen == []
    meter.record(2, {"loss": 3.0}, images=100, wait_s=0.3, total_s=0.5)
    (s,) = seen
    assert s.losses == {"loss": 2.0} and s.images_per_s == pytest.approx(200.0)
    assert s.step_time_s == pytest.approx(0.5) and s.data_wait_fraction == pytest.approx(0.4)
    meter.record(3, {"loss": 5.0}, images=10, wait_s=0.0, total_s=1.0)
    meter.record(4, {"loss": 7.0}, images=10, wait_s=0.0, total_s=1.0)
    assert seen[1].losses == {"loss": 6.0} and seen[1].batch == 4  # a new window


class _Recorder:
    def __init__(self):
        self.calls = []

    def on_epoch_start(self, rank, epoch):
        self.calls.append(("start", rank, epoch))

    def on_batches(self, rank, epoch, batches):
        self.calls.append(("batches", rank, epoch))
        return batches


def test_hooks_run_at_each_epoch_start_and_max_steps_stops(setup):
    cfg, feed = setup
    hook = _Recorder()
    trainer = Trainer(cfg, init_batch=feed.init_batch(), device="cpu")
    result = train_epochs(trainer, feed, cfg, hooks=[hook], max_steps=7)
    assert result.status == "max_steps" and trainer.step == 7 and result.epochs_done == 1
    assert hook.calls == [("start", 0, 0), ("batches", 0, 0), ("start", 0, 1), ("batches", 0, 1)]
