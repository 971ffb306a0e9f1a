"""benchmarks/paper_tables.py's pieces without Ray runs: the grid of a table (rows x seeds, each cell
a valid Config; Table 3's ablation cells differ from the full model's in their technique only), the
scale settings, and the table builder (per-row mean ± std over seeds, the paper's column, row order)."""
from __future__ import annotations

import math
import statistics
import sys

import pytest

from helpers import REPO

sys.path.insert(0, str(REPO))  # benchmarks/ is not installed: import it from the checkout

from benchmarks.paper import grid, report  # noqa: E402
from benchmarks.paper.tables import TABLES  # noqa: E402
from igan.presets import TABLE3_ABLATIONS  # noqa: E402
from pipelines.tune.search import resolve_search, trial_config  # noqa: E402


def _cells(table, scale: str, seeds: int) -> dict:
    """``{(row value, seed): Config}`` for every cell of the table's grid, expanded as Tune expands it."""
    from ray.tune.search.variant_generator import generate_variants

    search, space = resolve_search(grid.grid_options(table, scale, seeds))
    cells = {}
    for _, sampled in generate_variants(space):
        cfg = trial_config(search.base, sampled, search.keys, search.tied, search.overlays)
        cells[(sampled[table.key], sampled["train.seed"])] = cfg
    return cells


@pytest.mark.parametrize("scale", grid.SCALES)
@pytest.mark.parametrize("name", list(TABLES))
def test_grid_is_rows_times_seeds_of_valid_configs(name, scale):
    table = TABLES[name]
    cells = _cells(table, scale, seeds=3)
    assert sorted(cells, key=str) == sorted(((r.value, s) for r in table.rows for s in range(3)), key=str)
    for (value, seed), cfg in cells.items():
        assert cfg.train.seed == seed and cfg.data.label_seed == seed  # the seed draws the labeled subset too
        if table.key == "data.labels_per_class":
            assert cfg.data.labels_per_class == value and cfg.preset == table.preset
        else:
            assert cfg.preset == value
        assert (cfg.train.epochs == 2) == (scale == "smoke")  # full scale: the preset's recipe


@pytest.mark.parametrize("scale", grid.SCALES)
def test_table3_ablation_cells_differ_from_the_full_model_in_their_technique_only(scale):
    cells = _cells(TABLES["cifar10_is"], scale, seeds=2)
    for name, changes in TABLE3_ABLATIONS.items():
        expected = {f"{section}.{k}": v for section, values in changes.items() for k, v in values.items()}
        for seed in range(2):
            full, ablated = cells[("cifar10_mbd", seed)].flat(), cells[(name, seed)].flat()
            assert {k: v for k, v in ablated.items() if v != full[k]} == {"preset": name, **expected}


def test_scales():
    assert grid.scale_overrides(TABLES["mnist"], "full") == []
    smoke = grid.scale_overrides(TABLES["cifar10_is"], "smoke")
    assert "eval.scorer=domain" in smoke and "train.epochs=2" in smoke
    assert "eval.scorer=none" in grid.scale_overrides(TABLES["mnist"], "smoke")
    with pytest.raises(ValueError, match="smoke, full"):
        grid.scale_overrides(TABLES["mnist"], "huge")
    with pytest.raises(ValueError, match="seeds"):
        grid.table_space(TABLES["mnist"], 0)


def test_rows_are_picked_by_value_or_label_in_table_order():
    table = TABLES["cifar10_is"].pick(["-MBF", "cifar10_mbd"])
    assert [r.value for r in table.rows] == ["cifar10_mbd", "cifar10_mbd_no_mbf"]
    assert [r.value for r in TABLES["mnist"].pick(["20", "2"]).rows] == [2, 20]
    with pytest.raises(ValueError, match="no row 7; rows: 2 \\(20 labels\\)"):
        TABLES["mnist"].pick(["7"])


def _trial(labels, seed, error):
    return {"trial": f"t{labels}-{seed}", "data.labels_per_class": labels, "train.seed": seed,
            "val_ssl_error": 0.5, "test_ssl_error": error, "status": "TERMINATED" if error == error else "ERROR"}


def test_table_builder_mean_std_paper_column_and_row_order():
    table = TABLES["mnist"]
    trials = [_trial(20, 1, 0.0095), _trial(2, 0, 0.2), _trial(10, 0, 0.0093), _trial(20, 0, 0.0089),
              _trial(2, 1, 0.1), _trial(10, 1, float("nan")), _trial(2, 2, 0.15)]  # any order, one failed
    rows = report.row_results(table, trials)
    assert [r["label"] for r in rows] == ["20 labels", "50 labels", "100 labels", "200 labels"]  # the paper's order
    assert [r["paper"] for r in rows] == ["1677 ± 452", "221 ± 136", "93 ± 6.5", "90 ± 4.2"]
    r20 = rows[0]
    assert r20["per_seed"] == {0: pytest.approx(2000.0), 1: pytest.approx(1000.0), 2: pytest.approx(1500.0)}
    assert r20["n"] == 3 and r20["mean"] == pytest.approx(1500.0)
    assert r20["std"] == pytest.approx(statistics.stdev([2000.0, 1000.0, 1500.0]))  # sample std over seeds
    assert rows[1]["n"] == 0 and rows[1]["mean"] is None and rows[1]["per_seed"] == {}  # no trial ran
    assert rows[2]["per_seed"] == {0: pytest.approx(93.0), 1: None} and rows[2]["std"] is None  # one value
    assert rows[3]["std"] == pytest.approx(statistics.stdev([89.0, 95.0]))

    text = report.markdown(table, rows, "MNIST, smoke", ["a note"])
    lines = text.splitlines()
    assert lines[0] == "**MNIST, smoke**" and lines[-1] == "- a note"
    body = [ln for ln in lines if ln.startswith("| ") and "labels" in ln]
    assert [ln.split(" | ")[0] for ln in body] == ["| 20 labels", "| 50 labels", "| 100 labels", "| 200 labels"]
    assert body[0] == "| 20 labels | 1677 ± 452 | 1500 ± 500 | 3 of 3 | 0: 2000, 1: 1000, 2: 1500 |"
    assert body[1] == "| 50 labels | 221 ± 136 | — | 0 of 0 | no trial |"
    assert body[2] == "| 100 labels | 93 ± 6.5 | 93 | 1 of 2 | 0: 93, 1: — |"
    assert "errors of 10,000" in lines[2]


def test_table3_has_the_real_data_row_first():
    table = TABLES["cifar10_is"].pick(["cifar10_mbd"])
    trials = [{"overlay": "cifar10_mbd", "train.seed": 0, "test_inception_score": 6.5}]
    rows = report.row_results(table, trials)
    text = report.markdown(table, rows, "t3", [], reference={"mean": 11.2, "std": 0.1, "note": "200 real test images"})
    body = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith(("| row", "|---"))]
    assert body == ["| Real data | 11.24 ± .12 | 11.20 ± 0.10 (200 real test images) | — | — |",
                    "| Our methods (all) | 8.09 ± .07 | 6.50 | 1 of 1 | 0: 6.50 |"]
    assert not math.isnan(rows[0]["mean"])


def test_synthetic_shards_are_a_usable_shard_root(tmp_path):
    from benchmarks.paper.fixtures import synthetic_shards
    from igan.data.manifest import split_manifest

    made = synthetic_shards("mnist", str(tmp_path), {"n_train": 40, "n_test": 10})
    assert (made["train"], made["test"]) == (40, 10)
    for split, n in (("train", 40), ("test", 10)):
        assert split_manifest(made["root"], split)[1]["num_samples"] == n
