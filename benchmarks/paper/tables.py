"""The paper's result tables that igan reproduces: for each, the preset its rows start from, the grid
dimension a row sets, the metric, and the paper's figure per row (Salimans et al. 2016, tables 1-3)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import tune_spaces


@dataclass(frozen=True)
class Row:
    """One row: its label as the paper prints it, the value of the table's grid dimension, and the
    paper's figure as printed."""
    label: str
    value: Any
    paper: str


@dataclass(frozen=True)
class Table:
    """A result table. ``key`` is the config key its rows vary (``tune_spaces.OVERLAY`` when each
    row is a preset); ``metric`` is the base name (``val_`` chooses, ``test_`` is reported);
    ``scale`` turns the metric into the table's ``unit``; ``reference`` is a row of real data the
    paper scores (label, paper's figure), not trained."""
    name: str
    title: str
    preset: str
    key: str
    rows: tuple[Row, ...]
    metric: str
    mode: str
    unit: str
    scale: float
    decimals: int
    reference: tuple[str, str] | None = None

    @property
    def test_metric(self) -> str:
        return f"test_{self.metric}"

    @property
    def val_metric(self) -> str:
        return f"val_{self.metric}"

    def pick(self, wanted: list[str] | None) -> "Table":
        """This table with only the rows named in ``wanted`` (a row's label or value, as text), in the
        table's order; all of them for None. ValueError naming the rows for a name that is none."""
        if not wanted:
            return self
        names = {str(r.value): r for r in self.rows} | {r.label: r for r in self.rows}
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise ValueError(f"table {self.name} has no row {', '.join(unknown)}; rows: "
                             + ", ".join(f"{r.value} ({r.label})" for r in self.rows))
        keep = {id(names[w]) for w in wanted}
        return replace(self, rows=tuple(r for r in self.rows if id(r) in keep))


def _labels(per_class: tuple[int, ...], paper: tuple[str, ...]) -> tuple[Row, ...]:
    """Rows of a semi-supervised table: total labels (10 classes) and their figure."""
    return tuple(Row(f"{10 * n} labels", n, fig) for n, fig in zip(per_class, paper))


TABLES: dict[str, Table] = {
    "mnist": Table("mnist", "MNIST semi-supervised: test errors of 10,000", "mnist",
                   "data.labels_per_class", _labels((2, 5, 10, 20), ("1677 ± 452", "221 ± 136", "93 ± 6.5", "90 ± 4.2")),
                   "ssl_error", "min", "errors of 10,000", 10_000.0, 0),
    "cifar10": Table("cifar10", "CIFAR-10 semi-supervised: test error %", "cifar10", "data.labels_per_class",
                     _labels((100, 200, 400, 800), ("21.83 ± 2.01", "19.61 ± 2.09", "18.63 ± 2.32", "17.72 ± 1.82")),
                     "ssl_error", "min", "%", 100.0, 2),
    "svhn": Table("svhn", "SVHN semi-supervised: test error %", "svhn", "data.labels_per_class",
                  _labels((50, 100, 200), ("18.44 ± 4.8", "8.11 ± 1.3", "6.16 ± 0.58")), "ssl_error", "min", "%", 100.0, 2),
    "cifar10_is": Table(
        "cifar10_is", "CIFAR-10 Inception score of the minibatch-discrimination model and its ablations (table 3)",
        "cifar10_mbd", tune_spaces.OVERLAY,
        (Row("Our methods (all)", "cifar10_mbd", "8.09 ± .07"), Row("-VBN+BN", "cifar10_mbd_no_vbn", "7.54"),
         Row("-L+HA", "cifar10_mbd_no_l_ha", "6.86 ± .06"), Row("-LS", "cifar10_mbd_no_ls", "6.83"),
         Row("-L", "cifar10_mbd_no_l", "4.36"), Row("-MBF", "cifar10_mbd_no_mbf", "3.87")),
        "inception_score", "max", "Inception score", 1.0, 2, reference=("Real data", "11.24 ± .12")),
}
