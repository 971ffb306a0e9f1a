"""``benchmarks/paper_tables.py --table mnist --scale smoke --seeds 1`` end to end on two rows: the
synthetic MNIST fixture, one Tune grid on a local Ray, a local sqlite MLflow store with the parent run
and a child run per row and seed, the markdown table (file, stdout, the parent run's artifact) and
the JSON line."""
from __future__ import annotations

import json
import sys

import pytest

from helpers import REPO

sys.path.insert(0, str(REPO))  # benchmarks/ is not installed: import it from the checkout

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("igan_home")]


def test_mnist_smoke_table_on_two_rows(ray_local, tmp_path, capsys):
    from mlflow import MlflowClient

    from benchmarks import paper_tables

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "table.md"
    rc = paper_tables.main(["--table", "mnist", "--scale", "smoke", "--seeds", "1", "--rows", "2,20",
                            "--tracking-uri", tracking, "--storage", str(tmp_path / "ray"), "--out", str(out),
                            "--experiment", "paper-e2e", "--max-concurrent", "2"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-3000:]
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert [r["label"] for r in result["rows"]] == ["20 labels", "200 labels"]
    assert all(r["n"] == 1 and 0 <= r["mean"] <= 10_000 for r in result["rows"])
    assert result["failed_runs"] == 0 and "SYNTHETIC mnist fixture" in result["data"]

    text = out.read_text()
    assert text in captured.out and "| 20 labels | 1677 ± 452 |" in text and "Smoke scale" in text

    client = MlflowClient(tracking_uri=tracking)
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED"
    exp = client.get_experiment_by_name("paper-e2e")
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(int(c.data.params["data.labels_per_class"]) for c in children) == [2, 20]
    assert all(c.info.status == "FINISHED" and "test_ssl_error" in c.data.metrics for c in children)
    artifact = client.download_artifacts(parent.info.run_id, "paper_table.md", str(tmp_path / "dl"))
    assert open(artifact).read() == text
