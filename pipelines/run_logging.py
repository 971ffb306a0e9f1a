"""What a driver records in an MLflow run from its workers' events (``igan train``'s run and each
Tune trial's child run alike): epoch metrics at step = epoch, per-step losses and throughput under
``step/`` at step = global training step, sample grids as step-indexed images (and as
``samples/epoch_NNNN.png`` files), and the workers' own warnings and errors (``logs/workers.log``);
plus the network that scores the run's samples (param ``eval.scorer_network``)."""
from __future__ import annotations

from typing import Any

#: Prefix of the metrics logged every ``train.log_every`` steps (step = global training step).
STEP_PREFIX = "step/"
#: The step-indexed image key of the sample grids (step = epoch).
SAMPLES_KEY = "samples"
WORKER_LOG = "logs/workers.log"
#: The param naming the network that scored the run (``eval.scorer`` resolved, see below).
SCORER_NETWORK_PARAM = "eval.scorer_network"


def scorer_network_params(cfg):
    """``({"eval.scorer_network": network}, cfg for the workers)``: the network that scores ``cfg``'s
    samples here (:func:`igan.evaluation.scorer_network`: ``eval.scorer=auto`` resolved by the
    weight files this node finds) and ``cfg`` with that network named instead of auto, so the
    workers, the job record and the registered models score with the network the run logged."""
    from igan.evaluation import scorer_network, with_scorer_network

    network = scorer_network(cfg)
    return {SCORER_NETWORK_PARAM: network}, with_scorer_network(cfg, network)


def step_metrics(ev: dict) -> dict[str, float]:
    """The ``step/`` metrics of a ``step`` event: the window's mean losses, ``images_per_s`` (summed
    over the ranks), ``step_time_s`` and ``data_wait_fraction`` (rank 0's)."""
    out = {f"{STEP_PREFIX}{k}": v for k, v in ev["losses"].items()}
    out.update({f"{STEP_PREFIX}images_per_s": ev["images_per_s"], f"{STEP_PREFIX}step_time_s": ev["step_time_s"],
                f"{STEP_PREFIX}data_wait_fraction": ev["data_wait_fraction"]})
    return out


def log_step(tracker, ev: dict) -> None:
    """Record a ``step`` event."""
    tracker.log_metrics(step_metrics(ev), step=ev["step"])


def log_epoch(tracker, ev: dict) -> None:
    """Record an ``epoch`` event: its metrics (and each rank's CUDA peak memory, MiB) at step =
    epoch, and its sample grid."""
    metrics = dict(ev["metrics"])
    for rank, mib in enumerate(ev.get("cuda_peak_mib") or []):
        metrics[f"cuda_peak_mib_rank{rank}"] = mib
    tracker.log_metrics(metrics, step=ev["epoch"])
    grid = ev.get("grid")
    if grid is not None:
        tracker.log_step_image(grid, SAMPLES_KEY, step=ev["epoch"])
        tracker.log_image(grid, f"samples/epoch_{ev['epoch']:04d}.png")


def worker_line(ev: dict) -> str:
    """A ``log`` event as one console line: ``igan worker rank R: LEVEL: message``."""
    return f"igan worker rank {ev['rank']}: {ev['level']}: {ev['message']}"


class WorkerLog:
    """The workers' messages of one run: printed as they come and kept for the run's log artifact."""

    def __init__(self, show):
        self.show, self.lines = show, []

    def add(self, ev: dict) -> None:
        line = worker_line(ev)
        self.lines.append(line)
        self.show(line)

    def save(self, tracker: Any) -> None:
        """Log the lines as ``logs/workers.log`` on the run (nothing when there are none)."""
        if self.lines:
            tracker.log_text("\n".join(self.lines) + "\n", WORKER_LOG)
