"""Nothing igan reads from outside runs code: checkpoints (``state.pt``, ``rng-rank<R>.pt``) load with
the weights-only unpickler, CIFAR-10 batches with a NumPy-only unpickler. Each crafted file carries
a payload that would create a marker file when unpickled by a full unpickler."""
from __future__ import annotations

import json
import os
import pickle
import random

import numpy as np
import pytest
import torch

from fixtures_formats import make_cifar10
from igan.config import apply_overrides
from igan.checkpoint import META, RANK_RNG, STATE, load_trainer, save_checkpoint
from igan.presets import get_preset
from igan.trainer import Trainer

TINY_DIGITS = ["model.d_widths=[16,8]", "model.g_widths=[16]", "techniques.historical_averaging=true"]


class Payload:
    """Unpickled by a full unpickler, it writes ``marker``: the stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('payload ran')",)


def _one_line(text: str) -> bool:
    return len(text.strip().splitlines()) == 1 and "Traceback" not in text


def _attempt(load) -> BaseException | None:
    """The exception ``load()`` raised, or None: the tests check the marker before the error."""
    try:
        load()
    except Exception as exc:  # noqa: BLE001
        return exc
    return None


# -- checkpoints ---------------------------------------------------------------------------------

def _crafted_checkpoint(folder, marker, poisoned: str):
    """A checkpoint folder as the worker writes it, with ``poisoned`` (state.pt or rng-rank0.pt)
    replaced by a pickle carrying the payload."""
    cfg = apply_overrides(get_preset("digits"), TINY_DIGITS)
    trainer = Trainer(cfg, device="cpu")
    folder.mkdir()
    torch.save(trainer.state_dict(), folder / STATE)
    torch.save({"torch": torch.get_rng_state()}, folder / RANK_RNG.format(0))
    (folder / META).write_text(json.dumps({"epochs_done": 1, "step": 1, "run_id": None, "metrics": {}}))
    torch.save({"G": Payload(marker), "step": 1}, folder / poisoned)
    return cfg


def _read_worker_checkpoint(folder) -> None:
    """What a restarted worker reads: ``state.pt`` and its rank's RNG file."""
    from igan import checkpoint

    checkpoint.read_checkpoint(folder)
    checkpoint.read_rank_rng(folder, 0)


@pytest.mark.parametrize("poisoned", ["state.pt", "rng-rank0.pt"])
def test_crafted_worker_checkpoint_does_not_run_its_payload(tmp_path, poisoned):
    marker = tmp_path / "payload-ran"
    _crafted_checkpoint(tmp_path / "ckpt", marker, poisoned)
    error = _attempt(lambda: _read_worker_checkpoint(tmp_path / "ckpt"))
    assert not marker.exists(), "the checkpoint's payload ran"
    from igan.checkpoint import CheckpointError

    assert isinstance(error, CheckpointError), error
    assert _one_line(str(error)) and poisoned in str(error) and "exec" in str(error), error


def test_crafted_trainer_checkpoint_does_not_run_its_payload(tmp_path):
    marker = tmp_path / "payload-ran"
    cfg = _crafted_checkpoint(tmp_path / "ckpt", marker, "state.pt")
    error = _attempt(lambda: load_trainer(cfg, tmp_path / "ckpt"))
    assert not marker.exists(), "the checkpoint's payload ran"
    from igan.checkpoint import CheckpointError

    assert isinstance(error, CheckpointError) and "state.pt" in str(error) and _one_line(str(error)), error


def test_checkpoint_holds_only_tensors_and_plain_values(tmp_path):
    cfg = apply_overrides(get_preset("digits"), TINY_DIGITS)
    folder = save_checkpoint(Trainer(cfg, device="cpu"), tmp_path / "ck")
    for name in (STATE, RANK_RNG.format(0)):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(str(folder / name)) == []
    from igan.checkpoint import read_state

    assert read_state(folder / STATE)["step"] == 0 and json.loads((folder / META).read_text())["epochs_done"] == 0


def _draws():
    return np.random.rand(4).tolist(), random.random(), random.gauss(0, 1), np.random.randn(2).tolist()


@pytest.mark.parametrize("legacy", [False, True])
def test_checkpoint_restores_numpy_and_python_rng_exactly(tmp_path, legacy):
    """Current checkpoints (RNG states as tensors) and older ones (NumPy's and Python's state
    tuples, the NumPy key an ndarray) both restore the exact streams, with the weights-only loader."""
    cfg = apply_overrides(get_preset("digits"), TINY_DIGITS)
    trainer = Trainer(cfg, device="cpu")
    np.random.seed(3)
    random.seed(4)
    random.gauss(0, 1)  # a cached Gaussian is part of Python's state
    np.random.randn(1)
    state = trainer.state_dict()
    if legacy:
        state["rng"]["numpy"], state["rng"]["python"] = np.random.get_state(), random.getstate()
    (tmp_path / "ck").mkdir()
    torch.save(state, tmp_path / "ck" / STATE)
    (tmp_path / "ck" / META).write_text(json.dumps({"epochs_done": 0, "step": 0}))
    expected = _draws()
    np.random.seed(99)
    random.seed(99)
    load_trainer(cfg, tmp_path / "ck")
    assert _draws() == expected


# -- CIFAR-10 batches ----------------------------------------------------------------------------

def test_crafted_cifar_batch_does_not_run_its_payload(tmp_path, capsys):
    from pipelines import cli

    exp = make_cifar10(str(tmp_path / "src"))
    marker = tmp_path / "payload-ran"
    batch = os.path.join(exp["path"], "data_batch_1")
    with open(batch, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    d[b"labels"] = Payload(marker)
    with open(batch, "wb") as f:
        pickle.dump(d, f, protocol=2)
    # The batches are read to plan the shards, before Ray starts: the error comes first.
    code = cli.main(["shard", "cifar10", "--src", exp["path"], "--out", str(tmp_path / "out"), "--split", "train"])
    err = capsys.readouterr().err
    assert not marker.exists(), "the CIFAR batch's payload ran"
    assert code == 2 and _one_line(err), err
    assert "data_batch_1" in err and "exec" in err, err



# -- registered models: exported programs only ------------------------------------------------------

TINY = {  # each preset at tiny widths; imagenet128 with a batch of 4 so its MBD groups are small
    "digits": ["model.d_widths=[16,8]", "model.g_widths=[16]"],
    "mnist": ["model.d_widths=[16,8]", "model.g_widths=[16]"],
    "cifar10": ["model.d_widths=[8,8]", "model.g_widths=[16,8,8]"],
    "svhn": ["model.d_widths=[8,8]", "model.g_widths=[16,8,8]"],
    "imagenet128": ["model.d_widths=[4,4,4,4,8]", "model.g_widths=[8,4,4,4,4]", "techniques.mbd_kernels=4",
                    "techniques.mbd_dim=3", "techniques.vbn_reference_size=4", "data.batch_size=4"],
    "ring8": ["model.d_widths=[16]", "model.g_widths=[16]", "techniques.mbd_kernels=4"],
    "grid25": ["model.d_widths=[16]", "model.g_widths=[16]", "techniques.mbd_kernels=4"],
}


def _save_exported(module, kind, cfg, path):
    """Save ``module`` as register_models logs it (MLflow ``pt2``, same example and signature)."""
    import mlflow.pytorch
    from mlflow.models import infer_signature

    from pipelines import registry

    example = registry._example_input(kind, cfg)
    registry.check_exports(module, example, [registry._example_input(kind, cfg, n)
                                             for n in registry.check_sizes(module, len(example))])
    with torch.no_grad():
        signature = infer_signature(example, module(torch.from_numpy(example)).numpy())
    mlflow.pytorch.save_model(module, str(path), signature=signature, input_example=example,
                              serialization_format="pt2", pip_requirements=["torch"])


@pytest.mark.parametrize("mbd", [True, False], ids=["mbd", "no-mbd"])
@pytest.mark.parametrize("preset", list(TINY))
def test_every_preset_registers_as_an_exported_program(tmp_path, preset, mbd):
    """Generator and classifier of every preset export for any batch size, are stored as ``pt2``
    and load back through the safe loader with the trained module's outputs; an MBD classifier
    still sees groups of its training batch size (checked on more than two groups)."""
    from pipelines import registry
    from pipelines.model_safety import load_pytorch_model, unsafe_reason

    torch.set_num_threads(1)
    cfg = apply_overrides(get_preset(preset), TINY[preset] + [f"techniques.minibatch_discrimination={mbd}"])
    modules = registry._modules_of(Trainer(cfg, device="cpu"), cfg)
    assert set(modules) == ({"generator", "classifier"} if cfg.techniques.semi_supervised else {"generator"})
    for kind, module in modules.items():
        path = tmp_path / kind
        _save_exported(module, kind, cfg, path)
        assert unsafe_reason(str(path)) is None and (path / "data" / "model.pt2").is_file()
        loaded = load_pytorch_model(str(path))
        x = torch.from_numpy(registry._example_input(kind, cfg, 2 * cfg.data.batch_size + 3))
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), module(x), rtol=1e-4, atol=1e-5)


def _exported_linear(tmp_path):
    module = torch.nn.Linear(3, 2).eval()
    example = np.random.default_rng(0).random((4, 3), dtype=np.float32)
    import mlflow.pytorch
    from mlflow.models import infer_signature

    with torch.no_grad():
        signature = infer_signature(example, module(torch.from_numpy(example)).numpy())
    path = tmp_path / "model"
    mlflow.pytorch.save_model(module, str(path), signature=signature, input_example=example,
                              serialization_format="pt2", pip_requirements=["torch"])
    return path


def _rewrite_graph(archive, old: bytes, new: bytes) -> None:
    """Replace ``old`` by ``new`` in the archive's graph (``models/*.json``), in place."""
    import zipfile

    records = {}
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            data = z.read(info)
            if info.filename.endswith(".json") and "/models/" in f"/{info.filename}":
                assert old in data
                data = data.replace(old, new)
            records[info] = data
    with zipfile.ZipFile(archive, "w") as z:
        for info, data in records.items():
            z.writestr(info, data)


@pytest.mark.parametrize("attack", ["symbolic-shape", "operator"])
def test_crafted_exported_program_does_not_run_its_payload(tmp_path, attack):
    """``torch.export.load`` parses symbolic shapes with ``sympy.sympify`` (Python ``eval``) and
    resolves operators by name under ``torch``; MLflow's pickle check passes such a file. The
    loader refuses it before torch reads it."""
    import re

    path = _exported_linear(tmp_path)
    archive = path / "data" / "model.pt2"
    marker = tmp_path / "payload-ran"
    if attack == "symbolic-shape":
        import zipfile

        with zipfile.ZipFile(archive) as z:
            graph = next(z.read(n) for n in z.namelist() if n.endswith("models/model.json"))
        symbol = re.search(rb"Symbol\('s\d+', positive=True, integer=True\)", graph).group(0)
        payload = f"__import__('pathlib').Path({str(marker)!r}).write_text('payload ran')".encode()
        _rewrite_graph(archive, symbol, payload.replace(b"'", b"\\u0027"))
    else:
        _rewrite_graph(archive, b'"torch.ops.aten.linear.default"', b'"torch.os.system"')
    error = _attempt(lambda: _load_model_as_igan_does(path))
    assert not marker.exists(), "the exported program's payload ran"
    from pipelines.model_safety import UnsafeModel

    assert isinstance(error, UnsafeModel) and _one_line(str(error)), error
    assert "__import__" in str(error) or "torch.os.system" in str(error), error


def _load_model_as_igan_does(path):
    """The module of the MLflow model folder ``path``, loaded the way ``igan sample`` loads (before
    pipelines.model_safety existed: ``mlflow.pytorch.load_model``)."""
    try:
        from pipelines.model_safety import load_pytorch_model
    except ImportError:
        import mlflow.pytorch

        return mlflow.pytorch.load_model(str(path))
    return load_pytorch_model(str(path))


def test_pickled_or_code_shipping_model_is_refused_before_loading(tmp_path):
    path = _exported_linear(tmp_path)
    marker = tmp_path / "payload-ran"
    torch.save(Payload(marker), path / "data" / "model.pth")  # MLflow loads model.pth when present
    error = _attempt(lambda: _load_model_as_igan_does(path))
    assert not marker.exists(), "the pickled model's payload ran"
    from pipelines.model_safety import UnsafeModel, unsafe_reason

    assert isinstance(error, UnsafeModel) and "stored pickled" in str(error), error
    (path / "data" / "model.pth").unlink()
    assert unsafe_reason(str(path)) is None
    mlmodel = (path / "MLmodel").read_text()
    (path / "MLmodel").write_text(mlmodel.replace("    code: null", "    code: code"))
    assert "ships Python code" in unsafe_reason(str(path))
