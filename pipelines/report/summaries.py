"""The tables of a report as plain rows: the runs' legend names, the final validation and test
metrics (named by the split they were measured on), the throughput summary and the config
compared across runs."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from pipelines.report.collect import RunData
from pipelines.report.curves import MEMORY_BASE, chart_order, split_rank

#: Config sections in the order a reader goes through a run; params outside them come last.
SECTIONS = ("data", "model", "techniques", "optim", "train", "eval")
OTHER_SECTION = "other"
#: Metric-name prefixes and the split each names (README, "Train, validation, test").
SPLITS = (("val_", "validation"), ("test_", "test"))


def run_labels(runs: list[RunData]) -> list[str]:
    """The name each run goes by in legends and column heads: its run name, with the start of its
    id added where two runs share a name."""
    names = [run.name for run in runs]
    return [f"{name} ({run.run_id[:8]})" if names.count(name) > 1 else name for name, run in zip(names, runs)]


@dataclass
class FinalMetric:
    """One row of the final-metrics table: the metric, the split it was measured on, and per run
    its last ``(step, value)`` (None where the run did not log it)."""
    name: str
    split: str
    values: list[tuple[int, float] | None]


def split_of(name: str) -> str | None:
    """``validation`` for ``val_*`` metrics, ``test`` for ``test_*``, else None."""
    return next((split for prefix, split in SPLITS if name.startswith(prefix)), None)


def final_metrics(runs: list[RunData]) -> list[FinalMetric]:
    """The last value of every ``val_*`` and ``test_*`` metric of each run, validation rows first,
    each split in the charts' order (SSL error, Inception score, FID, then by name)."""
    names = {n for run in runs for n in run.histories if split_of(n)}
    splits = [split for _, split in SPLITS]

    def order(name: str) -> tuple:
        prefix = next(p for p, _ in SPLITS if name.startswith(p))
        return (splits.index(split_of(name)), chart_order("val_" + name[len(prefix):]))

    rows = []
    for name in sorted(names, key=order):
        values = [run.histories[name][-1] if run.histories.get(name) else None for run in runs]
        rows.append(FinalMetric(name, split_of(name), values))
    return rows


@dataclass
class Throughput:
    """A run's throughput in one line: medians over its logged training steps (None where it logged
    no such metric), the peak CUDA memory over all ranks, and how many steps were logged."""
    images_per_s: float | None
    step_time_s: float | None
    data_wait_fraction: float | None
    peak_cuda_mib: float | None
    steps: int


def _median(points: list[tuple[int, float]] | None) -> float | None:
    values = [y for _, y in points or [] if math.isfinite(y)]
    return statistics.median(values) if values else None


def throughput(run: RunData) -> Throughput:
    """The :class:`Throughput` of ``run`` from its ``step/`` metrics."""
    peaks = [y for name, pts in run.histories.items() if split_rank(name)[0] == MEMORY_BASE
             for _, y in pts if math.isfinite(y)]
    h = run.histories
    return Throughput(_median(h.get("step/images_per_s")), _median(h.get("step/step_time_s")),
                      _median(h.get("step/data_wait_fraction")), max(peaks) if peaks else None,
                      len(h.get("step/images_per_s") or h.get("step/step_time_s") or []))


@dataclass
class ConfigRow:
    """One param across runs: its values (None where a run lacks it) and whether they differ."""
    key: str
    values: list[str | None]
    differs: bool


def section_of(key: str) -> str:
    """The config section of a param (``optim.lr_g`` -> ``optim``), :data:`OTHER_SECTION` for
    params outside :data:`SECTIONS`."""
    head = key.split(".", 1)[0]
    return head if "." in key and head in SECTIONS else OTHER_SECTION


def config_sections(runs: list[RunData]) -> list[tuple[str, list[ConfigRow]]]:
    """``[(section, rows)]`` of every param any run logged, in :data:`SECTIONS` order then
    :data:`OTHER_SECTION`, keys sorted within a section; sections without params are left out."""
    from pipelines.defaults import redact_text

    keys = sorted({k for run in runs for k in run.params})
    by_section: dict[str, list[ConfigRow]] = {}
    for key in keys:
        values = [redact_text(run.params[key]) if key in run.params else None for run in runs]
        by_section.setdefault(section_of(key), []).append(ConfigRow(key, values, len(set(values)) > 1))
    order = list(SECTIONS) + [OTHER_SECTION]
    return [(section, by_section[section]) for section in order if section in by_section]
