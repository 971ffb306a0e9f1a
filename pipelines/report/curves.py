"""Which charts a report draws and what goes in each: one chart per metric with every run's history
overlaid (ablations read across runs), quality metrics first, per-rank metrics (``..._rank<R>``)
gathered in one chart, and long per-step histories thinned to what a chart can show."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pipelines.report.collect import RunData
from pipelines.report.svg import PALETTE, Series

#: Charts shown first, in this order: the numbers runs are chosen and compared by.
QUALITY_FIRST = ("val_ssl_error", "val_inception_score", "val_fid")
#: Per-training-step metrics of the throughput section.
THROUGHPUT = ("step/images_per_s", "step/step_time_s", "step/data_wait_fraction")
#: Per-rank memory metrics (``cuda_peak_mib_rank<R>``), shown beside the throughput.
MEMORY_BASE = "cuda_peak_mib"
#: Prefix of metrics logged at the global training step (the rest are logged at the epoch).
STEP_PREFIX = "step/"
#: Points per series past which a history is thinned (a chart is ~500 px wide).
MAX_POINTS = 800

_RANK = re.compile(r"^(?P<base>.+)_rank(?P<rank>\d+)$")


@dataclass
class Chart:
    """One chart: its title (the metric, or the metric family of per-rank metrics), the x axis
    label, its series and each series' style index (:func:`pipelines.report.svg.series_style`)."""
    title: str
    x_label: str
    series: list[Series]
    styles: list[int]


def split_rank(name: str) -> tuple[str, int | None]:
    """``(base, rank)`` of a per-rank metric name (``cuda_peak_mib_rank1`` ->
    ``("cuda_peak_mib", 1)``), else ``(name, None)``."""
    m = _RANK.match(name)
    return (m["base"], int(m["rank"])) if m else (name, None)


def is_performance(name: str) -> bool:
    """Whether metric ``name`` belongs to the throughput section (throughput and per-rank memory)."""
    return name in THROUGHPUT or split_rank(name)[0] == MEMORY_BASE


def chart_order(base: str) -> tuple:
    """Sort key of a chart: :data:`QUALITY_FIRST`, other SSL error / Inception score / FID charts,
    other validation metrics, losses, other per-epoch metrics, then per-step metrics (each group by
    name)."""
    if base in QUALITY_FIRST:
        return (0, QUALITY_FIRST.index(base), base)
    if base.startswith(STEP_PREFIX):
        return (5, 0, base)
    if any(word in base for word in ("ssl_error", "inception_score", "fid")):
        return (1, 0, base)
    if base.startswith("val_"):
        return (2, 0, base)
    if base.startswith("loss"):
        return (3, 0, base)
    return (4, 0, base)


def thin(points: list[tuple[float, float]], max_points: int = MAX_POINTS) -> list[tuple[float, float]]:
    """The finite points of ``points``, at most about ``max_points`` of them: past that, the lowest
    and the highest point of each of ``max_points / 2`` equal runs of points (x order kept), so
    spikes stay visible where a plain stride would skip them."""
    pts = [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]
    if len(pts) <= max_points:
        return pts
    buckets = max(1, max_points // 2)
    out = []
    for b in range(buckets):
        chunk = pts[b * len(pts) // buckets:(b + 1) * len(pts) // buckets]
        if not chunk:
            continue
        lo = min(range(len(chunk)), key=lambda i: chunk[i][1])
        hi = max(range(len(chunk)), key=lambda i: chunk[i][1])
        out.extend(chunk[i] for i in sorted({lo, hi}))
    return out


def plottable(points: list[tuple[int, float]]) -> bool:
    """Whether a history has at least two finite points (one point is no curve)."""
    return sum(1 for _, y in points if math.isfinite(y)) >= 2


def _charts(runs: list[RunData], labels: list[str], names: set[str]) -> list[Chart]:
    families: dict[str, set[str]] = {}
    for name in names:
        families.setdefault(split_rank(name)[0], set()).add(name)
    charts = []
    for base in sorted(families, key=chart_order):
        members = sorted(families[base], key=lambda n: (split_rank(n)[1] or 0, n))
        if not any(plottable(run.histories.get(n, [])) for run in runs for n in members):
            continue
        ranked = [split_rank(n)[1] for n in members]
        series, styles = [], []
        for index, (run, label) in enumerate(zip(runs, labels)):
            for position, (name, rank) in enumerate(zip(members, ranked)):
                points = run.histories.get(name)
                if not points:
                    continue
                series.append(Series(label if rank is None else f"{label} · rank {rank}", thin(points)))
                styles.append(index + len(PALETTE) * position)  # a run's colour, a dash per rank
        title = base if all(r is None for r in ranked) else f"{base}_rank* (per rank)"
        x_label = "training step" if base.startswith(STEP_PREFIX) else "epoch"
        charts.append(Chart(title, x_label, series, styles))
    return charts


def metric_charts(runs: list[RunData], labels: list[str]) -> list[Chart]:
    """The charts of every metric some run logged at two or more steps, except the throughput
    section's, in :func:`chart_order`; ``labels[i]`` names ``runs[i]`` in the legends."""
    names = {n for run in runs for n in run.histories if not is_performance(n)}
    return _charts(runs, labels, names)


def throughput_charts(runs: list[RunData], labels: list[str]) -> list[Chart]:
    """The charts of the throughput section: :data:`THROUGHPUT` in that order, then per-rank peak
    CUDA memory."""
    names = {n for run in runs for n in run.histories if is_performance(n)}
    charts = _charts(runs, labels, names)
    order = {name: i for i, name in enumerate(THROUGHPUT)}
    return sorted(charts, key=lambda c: order.get(c.title, len(order)))
