"""A registry version stored pickled is refused by ``igan sample`` / ``igan score`` before it is
read (its payload never runs) unless ``--trust-pickled-model``; registering a module that does not
export never falls back to pickle. Against a real ``mlflow server``."""
from __future__ import annotations


import pytest
from helpers.cli_run import run_cli
import torch
from torch import nn

from igan.config import apply_overrides
from igan.presets import get_preset
from igan.trainer import Trainer
from pipelines import registry
from pipelines.errors import UserError
from pipelines.tracking import RunTracker

pytestmark = pytest.mark.slow  # a real mlflow server
EXPERIMENT = "igan-test-trust"
TINY_DIGITS = ["model.d_widths=[16,8]", "model.g_widths=[16]"]


class Poison(nn.Module):
    """Pickled, it becomes a call of ``exec`` that writes ``marker``: a stand-in for any code."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('payload ran')",)


def _log_pickled(server: str, run_id: str, name: str, module: nn.Module, cfg) -> str:
    """Register ``module`` as version of ``name`` stored pickled (MLflow ``serialization_format=
    "pickle"``) with igan's metadata, as an older igan or anyone with write access could; returns
    its ``models:/`` URI. No input example: MLflow would load the model to validate it."""
    import mlflow.pytorch

    client = registry._client(server)
    experiment_id = client.get_run(run_id).info.experiment_id
    logged = client.create_logged_model(experiment_id, name="generator", source_run_id=run_id)
    metadata = {registry.METADATA_KEY: {"kind": "generator", "preset": cfg.preset, "config": cfg.to_dict()}}
    with registry._process_tracking_uri(server):
        mlflow.pytorch.log_model(pytorch_model=module, name="generator", metadata=metadata,
                                 pip_requirements=["torch"], serialization_format="pickle",
                                 run_id=run_id, model_id=logged.model_id)
        client.finalize_logged_model(logged.model_id, "READY")
        version = registry._create_version(client, name, logged.model_id, run_id, "generator", cfg)
    return f"models:/{name}/{version}"


@pytest.fixture(scope="module")
def pickled(mlflow_server, tmp_path_factory):
    """``poisoned``: a version whose pickle runs a payload; ``benign``: a digits generator stored
    pickled; ``marker``: the file the payload would write."""
    marker = tmp_path_factory.mktemp("trust") / "payload-ran"
    cfg = apply_overrides(get_preset("digits"), TINY_DIGITS)
    trainer = Trainer(cfg, device="cpu")
    with RunTracker(mlflow_server, EXPERIMENT, run_name="pickled") as tracker:
        poisoned = _log_pickled(mlflow_server, tracker.run_id, "igan-poisoned-generator", Poison(str(marker)), cfg)
        benign = _log_pickled(mlflow_server, tracker.run_id, "igan-pickled-generator", trainer.G.eval(), cfg)
    assert not marker.exists()
    return {"poisoned": poisoned, "benign": benign, "marker": marker, "trainer": trainer}


def igan(capsys, monkeypatch, *argv) -> tuple[int, str, str]:
    return run_cli(capsys, *argv)


@pytest.mark.parametrize("command", [["sample", "--n", "4", "--out", "x.png"], ["score", "--n", "10"]])
def test_pickled_version_is_refused_and_its_payload_does_not_run(pickled, mlflow_server, capsys, monkeypatch,
                                                                 tmp_path, command):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")  # MLflow's own switch does not open it
    try:
        code, _, err = igan(capsys, monkeypatch, command[0], pickled["poisoned"], *command[1:],
                            "--tracking-uri", mlflow_server, "--device", "cpu")
    except Exception as exc:  # noqa: BLE001 - the marker is the first thing to check
        code, err = None, repr(exc)
    assert not pickled["marker"].exists(), "the pickled model's payload ran"
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "pickled" in err and "--trust-pickled-model" in err and pickled["poisoned"] in err, err
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(UserError, match="stored pickled"):
        registry.load_generator(pickled["poisoned"], mlflow_server)
    assert not pickled["marker"].exists()


def test_trust_pickled_model_is_an_explicit_opt_in(pickled, mlflow_server, capsys, monkeypatch, tmp_path):
    out_png = tmp_path / "grid.png"
    argv = ["sample", pickled["benign"], "--n", "4", "--out", str(out_png), "--tracking-uri", mlflow_server,
            "--device", "cpu"]
    code, _, err = igan(capsys, monkeypatch, *argv)
    assert code == 2 and "--trust-pickled-model" in err and not out_png.exists(), err
    code, _, err = igan(capsys, monkeypatch, *argv, "--trust-pickled-model")
    assert code == 0 and out_png.exists(), err
    generator, cfg = registry.load_generator(pickled["benign"], mlflow_server, trust_pickled=True)
    torch.testing.assert_close(registry.generate_samples(generator, cfg, 5, seed=1),
                               pickled["trainer"].generate(5, seed=1))


class DataDependent(nn.Module):
    """A classifier whose control flow depends on the data: torch.export cannot trace it."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        logits = self.linear(x.flatten(1))
        return (logits if logits.sum() > 0 else -logits), None


def test_module_that_does_not_export_is_not_registered_and_never_pickled(mlflow_server, capsys):
    # A preset name of its own: the session's server is shared, and other modules count versions.
    cfg = apply_overrides(get_preset("digits"), TINY_DIGITS + ["preset=trusttest"])
    trainer = Trainer(cfg, device="cpu")
    with RunTracker(mlflow_server, EXPERIMENT, run_name="not-exportable") as tracker:
        capsys.readouterr()
        uris = registry.register_models(tracker.run_id, {"generator": trainer.G, "classifier": DataDependent()},
                                        cfg, mlflow_server, alias="champion")
        err = capsys.readouterr().err
    assert set(uris) == {"generator"}
    lines = [ln for ln in err.splitlines() if "not registered" in ln]
    assert len(lines) == 1 and "igan-trusttest-classifier" in lines[0] and "torch.export" in lines[0], err
    client = registry._client(mlflow_server)
    tags = client.get_run(tracker.run_id).data.tags
    assert "torch.export" in tags["igan.unregistered.classifier"]
    assert client.search_model_versions("name='igan-trusttest-classifier'") == []
