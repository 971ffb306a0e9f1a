"""``igan train``'s console and MLflow view of rank 0's events (pipelines.progress,
pipelines.run_logging), against a recording tracker."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.progress import TrainProgress, clock
from pipelines.run_logging import SAMPLES_KEY, WORKER_LOG, step_metrics


class _Tracker:
    def __init__(self):
        self.metrics, self.images, self.step_images, self.texts = [], [], [], {}

    def log_metrics(self, metrics, step):
        self.metrics.append((step, dict(metrics)))

    def log_image(self, image, artifact_file):
        self.images.append(artifact_file)

    def log_step_image(self, image, key, step):
        self.step_images.append((key, step))

    def log_text(self, text, artifact_file):
        self.texts[artifact_file] = text


def _step(step, epoch, batch, batches=10, time_s=0.5):
    return {"kind": "step", "step": step, "epoch": epoch, "batch": batch, "batches": batches,
            "losses": {"loss_d": 1.0, "loss_g": 2.0}, "images_per_s": 400.0, "step_time_s": time_s,
            "data_wait_fraction": 0.1}


def test_clock():
    assert [clock(s) for s in (0, 42, 187, 3720)] == ["0s", "42s", "3m07s", "1h02m"]


def test_plain_lines_off_a_tty_and_metrics_at_the_global_step():
    lines, tracker = [], _Tracker()
    p = TrainProgress(log=lines.append, tracker=tracker, epochs=3, tty=False)
    p.handle({"kind": "start", "epochs_done": 0, "step": 0, "steps_per_epoch": 10, "world_size": 2, "epochs": 3,
              "nodes": ["a", "a"]})
    p.handle(_step(14, epoch=1, batch=4))
    assert lines[0] == "igan train: starting: 3 epochs x 10 steps on 2 workers"
    assert lines[1] == ("epoch 2/3 step 4/10 (total 14) 400 img/s loss_d=1 loss_g=2 eta epoch 3s job 8s")
    assert tracker.metrics == [(14, step_metrics(_step(14, 1, 4)))]
    assert set(tracker.metrics[0][1]) == {"step/loss_d", "step/loss_g", "step/images_per_s", "step/step_time_s",
                                          "step/data_wait_fraction"}


def test_etas_count_the_epochs_left():
    p = TrainProgress(log=print, tracker=_Tracker(), epochs=5, tty=False)
    assert p.etas(_step(2, epoch=0, batch=2, batches=10, time_s=1.0)) == (8.0, 48.0)


def test_epoch_event_logs_metrics_grid_and_rank_memory():
    lines, tracker = [], _Tracker()
    p = TrainProgress(log=lines.append, tracker=tracker, epochs=2, tty=False)
    grid = np.zeros((4, 4, 3), np.uint8)
    p.handle({"kind": "epoch", "epoch": 1, "step": 10, "metrics": {"loss_d": 1.5, "val_fid": 30.0}, "grid": grid,
              "elapsed": 12.0, "cuda_peak_mib": [100.0, 120.5]})
    assert tracker.metrics == [(1, {"loss_d": 1.5, "val_fid": 30.0, "cuda_peak_mib_rank0": 100.0,
                                    "cuda_peak_mib_rank1": 120.5})]
    assert tracker.step_images == [(SAMPLES_KEY, 1)] and tracker.images == ["samples/epoch_0001.png"]
    assert lines == ["epoch 1/2 step 10 loss_d=1.5 val_fid=30 [12s]"] and p.metrics["val_fid"] == 30.0


def test_worker_lines_are_shown_and_saved():
    lines, tracker = [], _Tracker()
    p = TrainProgress(log=lines.append, tracker=tracker, epochs=1, tty=False)
    p.handle({"kind": "log", "rank": 1, "level": "WARNING", "message": "RuntimeWarning: cache unreadable"})
    assert lines == ["igan worker rank 1: WARNING: RuntimeWarning: cache unreadable"]
    p.worker_log.save(tracker)
    assert tracker.texts[WORKER_LOG] == lines[0] + "\n"


def test_live_bar_on_a_tty(capsys):
    lines = []
    p = TrainProgress(log=lines.append, tracker=_Tracker(), epochs=2, tty=True)
    p.handle(_step(4, epoch=0, batch=4))
    assert p.bar is not None and p.bar.n == 4 and p.bar.total == 10
    p.handle({"kind": "log", "rank": 0, "level": "WARNING", "message": "m"})  # printed around the bar
    p.handle({"kind": "epoch", "epoch": 1, "step": 10, "metrics": {}, "grid": None, "elapsed": 1.0})
    assert p.bar is None and lines[-1].startswith("epoch 1/2 step 10")
    assert "400 img/s" in capsys.readouterr().err  # tqdm draws on stderr
    assert not any("img/s" in ln for ln in lines)  # no plain step lines on a TTY


@pytest.mark.parametrize("verbose, level", [(False, 40), (True, 20)])
def test_quiet_libraries(verbose, level):
    import logging

    from pipelines.ray_runtime import NOISY_LOGGERS, quiet_libraries

    quiet_libraries(verbose)
    assert [logging.getLogger(n).level for n in NOISY_LOGGERS] == [level] * len(NOISY_LOGGERS)
    quiet_libraries(False)
