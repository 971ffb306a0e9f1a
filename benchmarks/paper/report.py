"""A table's results: per row the test metric of every seed, mean +- std over seeds beside the
paper's figure, as a markdown table (and the same numbers as a dict for the JSON line)."""
from __future__ import annotations

import math
import statistics
from typing import Any

from benchmarks.paper.tables import Table


def row_results(table: Table, trials: list[dict]) -> list[dict]:
    """One dict per row of ``table``, in the table's order: ``label``, ``value``, ``paper``, the
    row's per-seed test values in the table's unit (``per_seed``: ``{seed: value}``, a trial without
    a finite value as None), ``mean``, ``std`` (sample std over the finite values; None below 2)
    and ``n`` (finite values). ``trials``: the search's trial rows (``run_search``'s summary)."""
    out = []
    for row in table.rows:
        per_seed = {}
        for t in trials:
            if t.get(table.key) != row.value:
                continue
            value = t.get(table.test_metric)
            finite = isinstance(value, (int, float)) and math.isfinite(value)
            per_seed[int(t["train.seed"])] = table.scale * float(value) if finite else None
        values = [v for _, v in sorted(per_seed.items()) if v is not None]
        out.append({"label": row.label, "value": row.value, "paper": row.paper, "per_seed": dict(sorted(per_seed.items())),
                    "n": len(values), "mean": statistics.fmean(values) if values else None,
                    "std": statistics.stdev(values) if len(values) > 1 else None})
    return out


def _num(value: float | None, decimals: int) -> str:
    return "—" if value is None else f"{value:.{decimals}f}"


def _ours(r: dict, decimals: int) -> str:
    """``mean ± std`` (``mean`` alone for one value, ``—`` for none)."""
    if r["mean"] is None:
        return "—"
    return _num(r["mean"], decimals) + ("" if r["std"] is None else f" ± {_num(r['std'], decimals)}")


def markdown(table: Table, rows: list[dict], heading: str, notes: list[str],
             reference: dict[str, Any] | None = None) -> str:
    """The table as markdown: ``heading``, one line per row (the paper's figure, igan's mean ± std over
    seeds, the seeds counted, each seed's value), the ``reference`` row when given
    (``{"mean", "std", "note"}``, real data scored like the samples), then ``notes`` as a list."""
    d = table.decimals
    lines = [f"**{heading}**", "",
             f"| row | paper | igan: mean ± std over seeds ({table.unit}) | seeds | per seed |",
             "|---|---|---|---|---|"]
    if reference is not None and table.reference is not None:
        label, paper = table.reference
        lines.append(f"| {label} | {paper} | {_num(reference['mean'], d)} ± {_num(reference['std'], d)} "
                     f"({reference['note']}) | — | — |")
    for r in rows:
        seeds = ", ".join(f"{s}: {_num(v, d)}" for s, v in r["per_seed"].items()) or "no trial"
        lines.append(f"| {r['label']} | {r['paper']} | {_ours(r, d)} | {r['n']} of {len(r['per_seed'])} | {seeds} |")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"
