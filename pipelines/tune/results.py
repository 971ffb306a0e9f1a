"""A search's results: one row per trial, the table printed and logged (text, CSV) and the plot of
the metric against each varied value (PNG)."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from pipelines.tune.search import Search, plain


def trial_rows(grid, search: Search, experiment_path: str) -> tuple[list[dict], list[str]]:
    """One row per trial of ``grid`` (id, child run, varied values, last metric, epochs, status)
    and the ids of trials that did not end (TERMINATED or ERROR). Statuses come from the search's
    saved state at ``experiment_path`` (Tune saves it as ``fit`` returns)."""
    from ray.tune import ExperimentAnalysis

    rows, unfinished = [], []
    trials = {t.trial_id: t for t in ExperimentAnalysis(experiment_path).trials}
    for result in grid:
        m = result.metrics or {}
        tid = m.get("trial_id") or _trial_id_from_path(result.path)
        trial = trials.get(tid)
        status = trial.status if trial is not None else ("ERROR" if result.error else "TERMINATED")
        if status not in ("TERMINATED", "ERROR"):
            unfinished.append(tid)
        value, reported = m.get(search.metric), m.get(reported_metric(search.metric))
        rows.append({"trial": tid, **{k: plain(result.config.get(k)) for k in search.keys},
                     search.metric: float(value) if value is not None else float("nan"),
                     reported_metric(search.metric): float(reported) if reported is not None else float("nan"),
                     "epoch": m.get("epoch"), "status": status, "run_id": m.get("mlflow_run_id"),
                     "_result": result})
    return rows, unfinished


def reported_metric(metric: str) -> str:
    """The test-split counterpart of a validation metric (``val_ssl_error`` -> ``test_ssl_error``):
    shown beside it in the results, never used to rank."""
    return "test_" + metric.removeprefix("val_")


def _trial_id_from_path(path: str | None) -> str | None:
    if not path:
        return None
    parts = Path(path).name.split("_")
    return parts[2] if len(parts) > 2 else Path(path).name


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _short(key: str) -> str:
    return key.split(".", 1)[-1]


def format_table(rows: list[dict], search: Search) -> str:
    """The results as an aligned text table, best first."""
    reported = reported_metric(search.metric)
    header = ["trial"] + [_short(k) for k in search.keys] + [search.metric, reported, "epochs", "status"]
    body = [[r["trial"]] + [fmt(r[k]) for k in search.keys]
            + [fmt(r[search.metric]), fmt(r.get(reported, float("nan"))),
               str(r["epoch"] if r["epoch"] is not None else "-"), r["status"]]
            for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def results_csv(rows: list[dict], search: Search) -> str:
    """The results as CSV text (full config keys as column names)."""
    buf = io.StringIO()
    cols = ["trial"] + search.keys + [search.metric, reported_metric(search.metric), "epoch", "status", "run_id"]
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: r.get(c) for c in cols})
    return buf.getvalue()


def plot_results(rows: list[dict], search: Search, best: dict) -> Path | None:
    """A PNG with one panel per varied key: the metric against the key's values (categories as
    positions, learning rates on a log axis), the best trial marked. Returns its path (temporary)."""
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if math.isfinite(r[search.metric])]
    if not ok:
        return None
    n = len(search.keys)
    cols = min(3, n)
    fig_rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(fig_rows, cols, figsize=(4.2 * cols, 3.2 * fig_rows), squeeze=False)
    for ax, key in zip(axes.flat, search.keys):
        values = [r[key] for r in ok]
        ys = [r[search.metric] for r in ok]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            xs = values
            if key.startswith("optim.lr"):
                ax.set_xscale("log")
        else:
            cats = sorted({str(v) for v in values})
            xs = [cats.index(str(v)) for v in values]
            ax.set_xticks(range(len(cats)))
            ax.set_xticklabels(cats)
        ax.scatter(xs, ys, s=30, alpha=0.8)
        bx = best[key] if numeric else sorted({str(v) for v in values}).index(str(best[key]))
        ax.scatter([bx], [best[search.metric]], s=120, facecolors="none", edgecolors="red", linewidths=2)
        ax.set_xlabel(key)
        ax.set_ylabel(search.metric)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{search.space_name}: {search.metric} ({search.mode}) per trial; best circled")
    fig.tight_layout()
    path = Path(tempfile.mkdtemp()) / f"{search.metric}_vs_params.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
