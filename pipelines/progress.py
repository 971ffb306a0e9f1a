"""``igan train``'s view of its job: what rank 0's events say, shown on the console and recorded in
the MLflow run (:mod:`pipelines.run_logging`).

On a terminal a live bar shows the epoch (step/total, images/s summed over the workers, the losses,
the ETA of the epoch and of the whole job); elsewhere (a log file, CI) one plain line is printed per
``step`` event, i.e. every ``train.log_every`` steps. Each finished epoch prints its line of metrics.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from pipelines.run_logging import WorkerLog, log_epoch, log_step


def clock(seconds: float) -> str:
    """``1h02m``, ``3m07s`` or ``42s``."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def losses_text(losses: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in losses.items())


@dataclass
class TrainProgress:
    """What the driver learned from rank 0's events (metrics, step, how the job ended) and how it
    shows them. ``tty``: draw a live bar (default: whether stderr is a terminal)."""
    log: Callable[[str], None]
    tracker: Any
    epochs: int
    tty: bool | None = None
    metrics: dict = field(default_factory=dict)
    step: int = 0
    epochs_done: int = 0
    steps_per_epoch: int = 0
    nonfinite: str | None = None
    data_error: str | None = None
    finished: bool = False
    attempts: list = field(default_factory=list)  # each start of the worker group: epochs_done, nodes

    def __post_init__(self):
        self.tty = sys.stderr.isatty() if self.tty is None else self.tty
        self.bar = None
        self.worker_log = WorkerLog(self._say)

    def _say(self, line: str) -> None:
        if self.bar is not None:
            self.bar.clear()
        self.log(line)
        if self.bar is not None:
            self.bar.refresh()

    def handle(self, ev: dict) -> None:
        """Show and record one event."""
        kind = ev["kind"]
        if kind == "start":
            nodes = ev.get("nodes") or []
            self.steps_per_epoch = int(ev["steps_per_epoch"])
            self.attempts.append({"epochs_done": ev["epochs_done"], "nodes": nodes})
            what = "starting" if ev["epochs_done"] == 0 else f"continuing after epoch {ev['epochs_done']}"
            where = f" on {len(set(nodes))} nodes" if len(set(nodes)) > 1 else ""
            self._say(f"igan train: {what}: {ev['epochs']} epochs x {ev['steps_per_epoch']} steps on "
                      f"{ev['world_size']} worker{'s' if ev['world_size'] > 1 else ''}{where}")
        elif kind == "step":
            log_step(self.tracker, ev)
            self._show_step(ev)
        elif kind == "epoch":
            self._close_bar()
            self.step, self.epochs_done = ev["step"], ev["epoch"]
            self.metrics.update(ev["metrics"])
            log_epoch(self.tracker, ev)
            shown = " ".join(f"{k}={v:.4g}" for k, v in ev["metrics"].items() if not k.endswith("_std"))
            self._say(f"epoch {ev['epoch']}/{self.epochs} step {ev['step']} {shown} [{clock(ev['elapsed'])}]")
        elif kind == "log":
            self.worker_log.add(ev)
        elif kind == "nonfinite":
            self.nonfinite = f"stopped in epoch {ev['epoch']}: {ev['reason']}"
        elif kind == "data_error":
            self.data_error = ev["reason"]
        elif kind == "done":
            self._close_bar()
            self.finished, self.step = True, ev["step"]
            self.metrics.update(ev.get("metrics") or {})

    def etas(self, ev: dict) -> tuple[float, float]:
        """Seconds left in the epoch and in the job at the step rate of ``ev`` (evaluations not counted)."""
        per_epoch = max(int(ev["batches"]), 1)
        left_epoch = max(per_epoch - int(ev["batch"]), 0)
        left_job = left_epoch + max(self.epochs - int(ev["epoch"]) - 1, 0) * per_epoch
        return left_epoch * ev["step_time_s"], left_job * ev["step_time_s"]

    def _show_step(self, ev: dict) -> None:
        eta_epoch, eta_job = self.etas(ev)
        text = (f"{ev['images_per_s']:.0f} img/s {losses_text(ev['losses'])} "
                f"eta epoch {clock(eta_epoch)} job {clock(eta_job)}")
        if not self.tty:
            self.log(f"epoch {ev['epoch'] + 1}/{self.epochs} step {ev['batch']}/{ev['batches']} "
                     f"(total {ev['step']}) {text}")
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=int(ev["batches"]), desc=f"epoch {ev['epoch'] + 1}/{self.epochs}", unit="step",
                            leave=False, dynamic_ncols=True, bar_format="{desc} {n_fmt}/{total_fmt} {bar} {postfix}")
        self.bar.n = int(ev["batch"])
        self.bar.set_postfix_str(text, refresh=True)

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
