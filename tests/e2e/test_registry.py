"""Model registry and the ``igan models`` / ``igan sample`` / ``igan score`` commands against a real
``mlflow server``: versions and aliases, URI forms, PNG sizes, scores, one-line errors."""
from __future__ import annotations

import json
import math

import pytest
from helpers.cli_run import run_cli
import torch
from PIL import Image

from igan.config import apply_overrides
from igan.presets import get_preset
from igan.trainer import Trainer
from pipelines import registry
from pipelines.errors import UserError
from pipelines.tracking import RunTracker

pytestmark = pytest.mark.slow  # a real mlflow server
EXPERIMENT = "igan-test-registry"


@pytest.fixture(scope="module")
def mlflow_server(own_mlflow_server):
    """A server of this module's own: it counts registered versions, which other modules' jobs on
    the shared session server would change."""
    return own_mlflow_server


@pytest.fixture(scope="module")
def registered(mlflow_server):
    """A digits run registered twice (versions 1 and 2) and a ring8 run registered once."""
    digits = apply_overrides(get_preset("digits"), ["model.d_widths=[16,8]", "model.g_widths=[16]"])
    ring8 = apply_overrides(get_preset("ring8"), ["model.d_widths=[16]", "model.g_widths=[16]",
                                                  "techniques.mbd_kernels=4"])
    out = {}
    for cfg in (digits, ring8):
        trainer = Trainer(cfg, device="cpu")
        with RunTracker(mlflow_server, EXPERIMENT, run_name=cfg.preset) as tracker:
            tracker.log_config(cfg)
            tracker.log_metrics({"val_inception_score": 1.5, "test_ssl_error": 0.25, "inception_score": 9.0}, step=1)
            uris = [registry.register_models(tracker.run_id, trainer, cfg, mlflow_server)]
            if cfg.preset == "digits":
                uris.append(registry.register_models(tracker.run_id, {"generator": trainer.G}, cfg,
                                                     mlflow_server))
        out[cfg.preset] = {"cfg": cfg, "trainer": trainer, "run_id": tracker.run_id, "uris": uris}
    return out


def igan(capsys, monkeypatch, *argv) -> tuple[int, str, str]:
    return run_cli(capsys, *argv)


def test_versions_and_latest_alias(registered, mlflow_server):
    d = registered["digits"]
    assert d["uris"] == [
        {"generator": "models:/igan-digits-generator/1", "classifier": "models:/igan-digits-classifier/1"},
        {"generator": "models:/igan-digits-generator/2"}]
    assert registry.resolve_model_uri("models:/igan-digits-generator@latest", mlflow_server) == \
        ("igan-digits-generator", "2", d["run_id"])
    assert registry.resolve_model_uri("models:/igan-digits-classifier@latest", mlflow_server)[1] == "1"
    assert registered["ring8"]["uris"] == [{"generator": "models:/igan-ring8-generator/1"}]
    listed = {m["name"]: m for m in registry.list_models(mlflow_server)}
    assert "igan-ring8-classifier" not in listed
    gen = listed["igan-digits-generator"]
    assert [(v["version"], v["aliases"]) for v in gen["versions"]] == [("2", ["latest"]), ("1", [])]
    assert gen["versions"][0]["metrics"] == {"test_ssl_error": 0.25, "val_inception_score": 1.5}


def test_champion_alias_and_reserved_latest(registered, mlflow_server):
    registry.set_alias("igan-digits-generator", 1, "champion", mlflow_server)
    assert registry.resolve_model_uri("models:/igan-digits-generator@champion", mlflow_server)[1] == "1"
    with pytest.raises(UserError, match="latest"):
        registry.set_alias("igan-digits-generator", 1, "latest", mlflow_server)
    with pytest.raises(UserError, match="versions: 1, 2"):
        registry.set_alias("igan-digits-generator", 7, "champion", mlflow_server)


def test_logged_model_has_signature_example_and_config(registered, mlflow_server, tmp_path):
    from mlflow.models import Model

    local = registry._download("models:/igan-digits-generator/1", mlflow_server, str(tmp_path))
    model = Model.load(local)
    assert model.signature.inputs.inputs[0].shape == (-1, 100)
    assert model.signature.outputs.inputs[0].shape == (-1, 1, 8, 8)
    assert model.saved_input_example_info is not None
    assert model.metadata["igan"]["config"] == registered["digits"]["cfg"].to_dict()
    classifier, _ = registry.load_classifier("models:/igan-digits-classifier@latest", mlflow_server)
    assert classifier(torch.rand(3, 1, 8, 8)).shape == (3, 10)


def test_registered_generator_reproduces_the_trainer(registered, mlflow_server):
    d = registered["digits"]
    generator, cfg = registry.load_generator("models:/igan-digits-generator@latest", mlflow_server)
    assert cfg == d["cfg"]
    samples = registry.generate_samples(generator, cfg, 600, seed=3)  # batches of data.batch_size
    assert torch.allclose(samples, d["trainer"].generate(600, seed=3), atol=1e-5)


def test_igan_models_json(registered, mlflow_server, capsys, monkeypatch):
    code, out, _ = igan(capsys, monkeypatch, "models", "--tracking-uri", mlflow_server, "--json")
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    names = {m["name"]: m for m in result["models"]}
    assert {"igan-digits-generator", "igan-digits-classifier", "igan-ring8-generator"} <= set(names)
    assert names["igan-digits-generator"]["aliases"]["latest"] == "2"
    assert "igan-digits-generator" in out.splitlines()[1] or "igan-digits-generator" in out
    code, out, _ = igan(capsys, monkeypatch, "models", "igan-ring8-generator", "--tracking-uri", mlflow_server)
    assert code == 0 and "igan-ring8-generator" in out and "igan-digits" not in out


@pytest.mark.parametrize("uri_form, n, size", [
    ("models:/igan-digits-generator@latest", 16, (37, 37)),   # 4 x (8 + 1) + 1
    ("models:/igan-digits-generator/1", 10, (37, 28)),        # 4 columns, 3 rows
    ("runs:/{run_id}/generator", 1, (8, 8)),                 # one image: no border (make_grid)
])
def test_igan_sample_writes_a_grid(registered, mlflow_server, capsys, monkeypatch, tmp_path, uri_form, n, size):
    uri = uri_form.format(run_id=registered["digits"]["run_id"])
    out_png = tmp_path / "grid.png"
    code, out, err = igan(capsys, monkeypatch, "sample", uri, "--n", str(n), "--out", str(out_png),
                          "--tracking-uri", mlflow_server, "--json", "--device", "cpu")
    assert code == 0, err
    assert out.splitlines()[0] == str(out_png)
    with Image.open(out_png) as image:
        assert image.format == "PNG" and image.size == size
    result = json.loads(out.strip().splitlines()[-1])
    assert (result["width"], result["height"]) == size and result["run_id"] == registered["digits"]["run_id"]


def test_igan_sample_toy_scatter(registered, mlflow_server, capsys, monkeypatch, tmp_path):
    out_png = tmp_path / "ring.png"
    code, _, err = igan(capsys, monkeypatch, "sample", "models:/igan-ring8-generator@latest", "--n", "500",
                        "--out", str(out_png), "--tracking-uri", mlflow_server)
    assert code == 0, err
    with Image.open(out_png) as image:
        assert image.size == (256, 256)


@pytest.mark.parametrize("argv, words", [
    (["sample", "models:/igan-digits-generator@nope", "--n", "4", "--out", "x.png"], ["nope", "@latest"]),
    (["sample", "models:/igan-mnist-generator@latest", "--n", "4", "--out", "x.png"], ["igan-mnist-generator"]),
    (["sample", "models:/igan-digits-generator/9", "--n", "4", "--out", "x.png"], ["version 9", "1, 2"]),
    (["sample", "models:/igan-digits-classifier/1", "--n", "4", "--out", "x.png"], ["not a generator"]),
    (["sample", "s3://bucket/model", "--n", "4", "--out", "x.png"], ["models:/NAME@ALIAS"]),
    (["score", "runs:/0123456789abcdef/generator"], ["0123456789abcdef"]),
    (["models", "igan-nothing-generator"], ["igan-nothing-generator"]),
])
def test_bad_input_exits_2_with_one_line(registered, mlflow_server, capsys, monkeypatch, tmp_path, argv, words):
    monkeypatch.chdir(tmp_path)
    code, out, err = igan(capsys, monkeypatch, *argv, "--tracking-uri", mlflow_server)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert all(w in err for w in words), err
    assert not (tmp_path / "x.png").exists()


def test_unreachable_server_and_missing_store(capsys, monkeypatch, tmp_path):
    from helpers import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    code, _, err = igan(capsys, monkeypatch, "models", "--tracking-uri", dead)
    assert code == 2 and "cannot reach the MLflow server" in err
    missing = f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}"
    code, _, err = igan(capsys, monkeypatch, "sample", "models:/igan-digits-generator@latest", "--n", "4",
                        "--out", str(tmp_path / "x.png"), "--tracking-uri", missing)
    assert code == 2 and "no MLflow store" in err
    code, out, _ = igan(capsys, monkeypatch, "models", "--tracking-uri", missing, "--json")
    assert code == 0 and json.loads(out.splitlines()[-1])["models"] == []


def test_igan_score(registered, mlflow_server, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("IGAN_CACHE", str(tmp_path / "cache"))
    # The domain classifier trains here from scratch: one epoch keeps the test short (the score
    # is still an Inception-style score of a real classifier; its quality is tested elsewhere).
    monkeypatch.setattr("igan.metrics.domain_classifier.default_epochs", lambda num_images: 1)
    code, out, err = igan(capsys, monkeypatch, "score", "models:/igan-digits-generator@latest", "--n", "200",
                          "--tracking-uri", mlflow_server, "--json", "--device", "cpu")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert math.isfinite(result["inception_score"]) and 1.0 <= result["inception_score"] <= 10.0
    assert result["scorer"] == "domain" and result["n"] == 200 and "inception_score" in out.splitlines()[0]
    code, out, err = igan(capsys, monkeypatch, "score", "models:/igan-ring8-generator@latest", "--n", "500",
                          "--tracking-uri", mlflow_server, "--json")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert 0 <= result["modes_captured"] <= 8 and 0.0 <= result["high_quality_fraction"] <= 1.0


def test_generator_device_fallback(registered, mlflow_server):
    uri = "models:/igan-digits-generator@latest"
    if torch.cuda.is_available():
        generator, cfg = registry.load_generator(uri, mlflow_server, device="cuda")
        assert registry.module_device(generator).type == "cuda"
    else:  # cannot move: a warning, and the CPU module that still works
        with pytest.warns(UserWarning, match="using the CPU"):
            generator, cfg = registry.load_generator(uri, mlflow_server, device="cuda")
        assert registry.module_device(generator).type == "cpu"
    assert registry.generate_samples(generator, cfg, 3).shape == (3, 1, 8, 8)


def test_registered_mbd_classifier_sees_training_sized_batches():
    # No server needed: the module that register_models logs for an MBD discriminator.
    cfg = apply_overrides(get_preset("digits"), ["model.d_widths=[16,8]", "model.g_widths=[16]",
                                                 "techniques.minibatch_discrimination=true",
                                                 "techniques.mbd_kernels=4", "data.batch_size=4"])
    trainer = Trainer(cfg, device="cpu")
    classifier = registry._modules_of(trainer, cfg)["classifier"]
    x = torch.rand(10, 1, 8, 8)
    expected = torch.cat([trainer.classify(x[:4]), trainer.classify(x[4:8]), trainer.classify(x[8:])])
    with torch.no_grad():
        torch.testing.assert_close(classifier(x), expected)
        torch.testing.assert_close(classifier(x), trainer.classify(x))
        whole = classifier.model(x)[0]  # one pass over all ten: other statistics, other logits
    assert not torch.allclose(whole, expected, atol=1e-4)
