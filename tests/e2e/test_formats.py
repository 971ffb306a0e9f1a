"""Every real data-set format end to end, as a user runs it from the README: a format-faithful raw
fixture -> ``igan shard`` -> ``igan train --preset <it> --workers 2`` (tiny widths, one epoch) ->
registered models -> ``igan sample`` / ``igan score`` on ``@latest``; ImageNet also through
``igan tune imagenet128`` (2 trials) -> ``@champion``, chosen on validation and scored on test.

Ray runs in this module with ``IGAN_INCEPTION_WEIGHTS`` pointing at an untrained Inception-v3 file
of the real layout (tests/conftest.py), set before Ray starts so its workers inherit it.
"""
from __future__ import annotations

import json
import os

import pytest
from helpers.cli_run import run_cli
from helpers.fixtures_formats import make_cifar10, make_imagenet, make_mnist, make_svhn

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("igan_home")]

RUN = ["train.epochs=1", "eval.every=1", "train.checkpoint_every=1", "eval.num_samples=10", "eval.final_num_samples=0", "eval.splits=2",
       "eval.grid_size=2", "data.batch_size=4", "data.val_per_class=1", "model.z_dim=8"]
CONV = ["model.d_widths=[8, 8]", "model.g_widths=[16, 8, 8]", "data.labels_per_class=1"]
FORMATS = {  # dataset: (raw fixture writer, preset, tiny overrides)
    "mnist": (lambda d: make_mnist(d, n_train=60, n_test=10), "mnist",
              ["model.d_widths=[16, 8]", "model.g_widths=[16]", "data.labels_per_class=1"]),
    "cifar10": (lambda d: make_cifar10(d, per_batch=12, n_test=10), "cifar10", CONV),
    "svhn": (lambda d: make_svhn(d, n_train=60, n_test=10), "svhn", CONV),
    "imagenet": (lambda d: make_imagenet(d, per_class=8, n_val=6), "imagenet128",
                 ["data.num_classes=3", "model.d_widths=[4, 4, 4, 4, 4, 4, 4, 8]", "model.g_widths=[8, 4, 4, 4, 4, 4]",
                  "model.g_noise_channels=[2, 2, 1, 1, 1, 1]", "techniques.mbd_kernels=4", "techniques.mbd_dim=2",
                  "techniques.vbn_reference_size=4"]),
}


@pytest.fixture(scope="module")
def ray_with_weights(inception_weights_file):
    import ray

    before = os.environ.get("IGAN_INCEPTION_WEIGHTS")
    os.environ["IGAN_INCEPTION_WEIGHTS"] = str(inception_weights_file)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    if before is None:
        os.environ.pop("IGAN_INCEPTION_WEIGHTS", None)
    else:
        os.environ["IGAN_INCEPTION_WEIGHTS"] = before


def igan(capsys, *argv: str) -> dict:
    """Run the ``igan`` CLI in this process; its exit status must be 0; returns its --json result."""
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, f"igan {' '.join(argv[:2])} exited {code}: {err[-2000:]}"
    return json.loads(out.strip().splitlines()[-1])


def _shard_and_train(tmp_path, capsys, mlflow_server, dataset: str, make=None) -> tuple[str, dict]:
    """``igan shard`` a raw fixture of ``dataset`` (``make``: another writer of it), then ``igan
    train`` its preset on 2 workers. Returns ``(shard root, train's JSON result)``."""
    default_make, preset, tiny = FORMATS[dataset]
    raw, root = str(tmp_path / "raw"), str(tmp_path / "shards")
    (make or default_make)(raw)
    shard = igan(capsys, "shard", dataset, "--src", raw, "--out", root, "--samples-per-shard", "16", "--json")
    assert shard["splits"]["train"]["num_shards"] >= 2
    args = ["train", "--preset", preset, "--data", root, "--workers", "2", "--cpus-per-worker", "1",
            "--threads", "1", "--tracking-uri", mlflow_server, "--storage", str(tmp_path / "ray"), "--json"]
    for item in RUN + tiny:
        args += ["--set", item]
    return root, igan(capsys, *args)


def _check_registered(capsys, tmp_path, mlflow_server, preset: str, root: str, alias: str = "latest") -> dict:
    uri = f"models:/igan-{preset}-generator@{alias}"
    png = tmp_path / f"{alias}.png"
    igan(capsys, "sample", uri, "--n", "4", "--out", str(png), "--tracking-uri", mlflow_server, "--json")
    assert png.stat().st_size > 0
    score = igan(capsys, "score", uri, "--n", "10", "--data", root, "--tracking-uri", mlflow_server, "--json")
    assert score["inception_score"] >= 1.0
    return score


@pytest.mark.parametrize("dataset", ["mnist", "cifar10", "svhn"])
def test_format_shard_train_register_sample_score(dataset, ray_with_weights, tmp_path, capsys, mlflow_server):
    root, summary = _shard_and_train(tmp_path, capsys, mlflow_server, dataset)
    m = summary["metrics"]
    assert 0.0 <= m["val_ssl_error"] <= 1.0 and 0.0 <= m["test_ssl_error"] <= 1.0
    assert m["val_inception_score"] >= 1.0 and m["test_inception_score"] >= 1.0
    preset = FORMATS[dataset][1]
    assert set(summary["model_uris"]) == {"generator", "classifier"}
    _check_registered(capsys, tmp_path, mlflow_server, preset, root)


@pytest.mark.parametrize("flat_val", [True, False], ids=["devkit-flat-val", "wnid-val"])
def test_imagenet_shard_train_tune_champion(flat_val, ray_with_weights, tmp_path, capsys, mlflow_server):
    from mlflow import MlflowClient

    make = lambda d: make_imagenet(d, per_class=8, n_val=6, flat_val=flat_val)  # noqa: E731
    root, summary = _shard_and_train(tmp_path, capsys, mlflow_server, "imagenet", make)
    assert sorted(n for n in os.listdir(root) if not n.startswith(".")) == ["train", "val"]  # val: the test role
    m = summary["metrics"]
    assert 0.0 <= m["val_ssl_error"] <= 1.0 and 0.0 <= m["test_ssl_error"] <= 1.0
    assert m["val_inception_score"] >= 1.0
    _check_registered(capsys, tmp_path, mlflow_server, "imagenet128", root)
    if not flat_val:
        return
    args = ["tune", "imagenet128", "--data", root, "--num-samples", "2", "--max-concurrent", "1",
            "--tracking-uri", mlflow_server, "--storage", str(tmp_path / "tune"), "--json"]
    for item in RUN + FORMATS["imagenet"][2]:
        args += ["--set", item]
    result = igan(capsys, *args)
    assert result["metric"] == "val_inception_score" and len(result["trials"]) == 2
    best = max(result["trials"], key=lambda t: t["val_inception_score"])
    assert result["best_trial"] == best["trial"]  # chosen on validation
    assert result["best_test_value"] == best["test_inception_score"]  # and reported on test
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    champion = client.get_model_version_by_alias("igan-imagenet128-generator", "champion")
    assert champion.run_id == result["best_run_id"]
    _check_registered(capsys, tmp_path, mlflow_server, "imagenet128", root, alias="champion")
