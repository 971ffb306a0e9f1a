"""RunTracker against a real ``mlflow server`` (and a local sqlite store): params, metrics, images,
artifacts, failure reasons, child runs, resume."""
from __future__ import annotations

import numpy as np
import pytest
from mlflow import MlflowClient

from igan.config import apply_overrides
from igan.presets import load_yaml
from igan.evaluation import sample_grid
from igan.presets import get_preset
from igan.trainer import NonFiniteLossError, Trainer
from pipelines.tracking import FAILURE_TAG, RunTracker

EXPERIMENT = "igan-test-tracking"
slow = pytest.mark.slow  # needs the real mlflow server


@pytest.fixture(scope="module")
def tiny():
    cfg = apply_overrides(get_preset("digits"), ["model.d_widths=[16,8]", "model.g_widths=[16]"])
    return cfg, Trainer(cfg, device="cpu")


def _artifacts(client, run_id, path=None) -> set[str]:
    out = set()
    for info in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, info.path) if info.is_dir else {info.path}
    return out


@slow
def test_run_has_params_metrics_and_artifacts(mlflow_server, tiny, tmp_path):
    cfg, trainer = tiny
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"weights")
    grid = sample_grid(trainer.generate(16, seed=0), cfg, nrow=4)
    with RunTracker(mlflow_server, EXPERIMENT, run_name="tracked") as tracker:
        tracker.log_config(cfg)
        for epoch in (1, 2):
            tracker.log_metrics({"loss_d": 1.0 / epoch, "loss_g": 2.0 / epoch, "note": "not a number"}, step=epoch)
        tracker.log_image(grid, "samples/epoch_0002.png")
        tracker.log_artifact(checkpoint, "checkpoints")
    client = MlflowClient(mlflow_server)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    flat = cfg.flat()
    assert set(run.data.params) == set(flat)
    assert run.data.params["model.d_widths"] == "[16, 8]"
    assert run.data.params["optim.lr_d"] == str(cfg.optim.lr_d)
    history = client.get_metric_history(tracker.run_id, "loss_d")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(1, 1.0), (2, 0.5)]
    assert "note" not in run.data.metrics
    assert _artifacts(client, tracker.run_id) == {"config.yaml", "samples/epoch_0002.png",
                                                  "checkpoints/checkpoint.pt"}
    local = client.download_artifacts(tracker.run_id, "config.yaml", str(tmp_path))
    assert load_yaml(local) == cfg
    from PIL import Image

    png = client.download_artifacts(tracker.run_id, "samples/epoch_0002.png", str(tmp_path))
    assert np.array_equal(np.asarray(Image.open(png).convert("RGB")), grid)


@slow
def test_params_are_logged_in_batches(mlflow_server):
    many = {f"extra.p{i:03d}": i for i in range(250)}
    many["long"] = "x" * 7000  # over MLflow's 6000-character limit: cut, not rejected
    with RunTracker(mlflow_server, EXPERIMENT) as tracker:
        tracker.log_params(many)
    params = MlflowClient(mlflow_server).get_run(tracker.run_id).data.params
    assert len(params) == 251 and params["extra.p249"] == "249" and len(params["long"]) == 6000


@slow
def test_exception_fails_the_run_with_its_reason(mlflow_server):
    with pytest.raises(NonFiniteLossError):
        with RunTracker(mlflow_server, EXPERIMENT) as tracker:
            tracker.log_metrics({"loss_d": float("nan")}, step=3)
            raise NonFiniteLossError("non-finite loss_d at step 3 (epoch 0)")
    run = MlflowClient(mlflow_server).get_run(tracker.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[FAILURE_TAG] == "NonFiniteLossError: non-finite loss_d at step 3 (epoch 0)"


@slow
def test_explicit_fail_is_kept(mlflow_server):
    with RunTracker(mlflow_server, EXPERIMENT) as tracker:
        tracker.fail("non-finite loss_g at step 7")
    run = MlflowClient(mlflow_server).get_run(tracker.run_id)
    assert run.info.status == "FAILED" and run.data.tags[FAILURE_TAG] == "non-finite loss_g at step 7"


@slow
def test_child_runs_and_resume(mlflow_server, tiny):
    cfg, _ = tiny
    client = MlflowClient(mlflow_server)
    with RunTracker(mlflow_server, EXPERIMENT, run_name="search") as parent:
        # two trackers at once in one process (a Tune search with its trials)
        with RunTracker(mlflow_server, EXPERIMENT, run_name="trial-0", parent_run_id=parent.run_id) as child:
            child.log_config(cfg)
            child.log_metrics({"loss_d": 1.0}, step=1)
        parent.log_metrics({"best": 1.0}, step=0)
    assert client.get_run(child.run_id).data.tags["mlflow.parentRunId"] == parent.run_id
    with RunTracker(mlflow_server, EXPERIMENT, run_id=child.run_id) as resumed:
        assert client.get_run(child.run_id).info.status == "RUNNING"
        resumed.log_config(cfg)  # params already there: no conflict
        resumed.log_metrics({"loss_d": 0.5}, step=2)
    assert resumed.run_id == child.run_id
    run = client.get_run(child.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["loss_d"] == 0.5
    assert [m.step for m in client.get_metric_history(child.run_id, "loss_d")] == [1, 2]


def test_sqlite_store_keeps_artifacts_beside_the_database(tmp_path, monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    with RunTracker(uri, EXPERIMENT) as tracker:
        tracker.log_image(np.zeros((4, 4, 3), np.uint8), "samples/x.png")
        artifact_uri = tracker.artifact_uri
    assert artifact_uri.startswith((tmp_path / "store" / "mlartifacts").as_uri())
    assert (tmp_path / "store" / "mlartifacts").is_dir()
    assert list(work.iterdir()) == []
