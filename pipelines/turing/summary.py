"""Accuracy of the human annotators, as the paper reports it (the share of images they labelled
correctly: 50 % means they cannot tell generated from real), with Wilson 95 % intervals, the CSV of
every answer, and logging both to the model's MLflow run."""
from __future__ import annotations

import csv
import io
import math

#: z of a two-sided 95 % interval.
Z95 = 1.959963984540054
CSV_COLUMNS = ("set_id", "data", "split", "n", "seed", "annotator", "image_id", "truth", "answer", "correct",
               "source", "answered_at")
CSV_ARTIFACT = "turing/answers.csv"


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval ``(low, high)`` of a proportion ``correct / total``; ``(0, 1)``
    when ``total`` is 0 (nothing known)."""
    if total <= 0:
        return 0.0, 1.0
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return max(0.0, centre - half), min(1.0, centre + half)


def _tally(rows: list[dict]) -> dict:
    total = len(rows)
    correct = sum(1 for r in rows if r["correct"])
    return {"answers": total, "correct": correct,
            "accuracy": correct / total if total else None,
            "ci95": list(wilson_interval(correct, total))}


def _group(rows: list[dict]) -> dict:
    out = _tally(rows)
    for truth in ("real", "generated"):
        out[truth] = _tally([r for r in rows if r["truth"] == truth])
    return out


def summarize(rows: list[dict]) -> dict:
    """``{"annotators": {name: group}, "pooled": group}`` where a group is ``answers, correct,
    accuracy (None without answers), ci95 [low, high]`` plus the same for its ``real`` and
    ``generated`` images."""
    names = sorted({r["annotator"] for r in rows})
    return {"annotators": {name: _group([r for r in rows if r["annotator"] == name]) for name in names},
            "pooled": _group(rows)}


def metrics_of(summary: dict) -> dict[str, float]:
    """The MLflow metrics of a summary: ``human_turing_accuracy`` (pooled), its interval, the counts,
    and the accuracy on real and on generated images (entries without answers are left out)."""
    pooled = summary["pooled"]
    out = {"human_turing_answers": float(pooled["answers"]), "human_turing_correct": float(pooled["correct"]),
           "human_turing_annotators": float(len(summary["annotators"]))}
    if pooled["accuracy"] is not None:
        out["human_turing_accuracy"] = pooled["accuracy"]
        out["human_turing_accuracy_ci95_low"], out["human_turing_accuracy_ci95_high"] = pooled["ci95"]
    for truth in ("real", "generated"):
        part = pooled[truth]
        out[f"human_turing_{truth}_answers"] = float(part["answers"])
        if part["accuracy"] is not None:
            out[f"human_turing_{truth}_accuracy"] = part["accuracy"]
    return out


def answers_csv(rows: list[dict]) -> str:
    """Every answer as CSV text with a header (:data:`CSV_COLUMNS`)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in CSV_COLUMNS})
    return buffer.getvalue()


def format_table(summary: dict) -> list[str]:
    """Printable lines: a header, one line per annotator and one pooled, with answers, accuracy, its
    Wilson interval, and the accuracy (answers) on real and on generated images."""
    def acc(group: dict) -> str:
        return "-" if group["accuracy"] is None else f"{group['accuracy']:.3f}"

    def line(label: str, g: dict) -> str:
        low, high = g["ci95"]
        interval = f"[{low:.3f}, {high:.3f}]"
        real = f"{acc(g['real'])} ({g['real']['answers']})"
        fake = f"{acc(g['generated'])} ({g['generated']['answers']})"
        return f"{label:<20} {g['answers']:>7} {acc(g):>9}  {interval:<16} {real:>14} {fake:>15}"

    header = (f"{'annotator':<20} {'answers':>7} {'accuracy':>9}  {'95% CI (Wilson)':<16} {'real (n)':>14} "
              f"{'generated (n)':>15}")
    return [header] + [line(name, g) for name, g in summary["annotators"].items()] + [line("pooled", summary["pooled"])]


def log_to_run(client, run_id: str, summary: dict, rows: list[dict]) -> dict[str, float]:
    """Log :func:`metrics_of` (step = number of answers, so reruns after more answers form a history)
    and the CSV artifact :data:`CSV_ARTIFACT` to run ``run_id``; returns the metrics logged."""
    import tempfile
    import time
    from pathlib import Path

    from mlflow.entities import Metric

    metrics = metrics_of(summary)
    now = int(time.time() * 1000)
    step = int(summary["pooled"]["answers"])
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(CSV_ARTIFACT).name
        path.write_text(answers_csv(rows))
        client.log_artifact(run_id, str(path), str(Path(CSV_ARTIFACT).parent))
    return metrics
