"""Registered models are exported programs only (pipelines.registry, pipelines.model_safety): every
preset registers as a ``torch.export`` program; a crafted program or a pickled / code-shipping model
does not run its payload."""
from __future__ import annotations

import numpy as np

import pytest
import torch

from helpers.payloads import Payload, attempt, one_line
from igan.config import apply_overrides
from igan.presets import get_preset
from igan.trainer import Trainer


TINY = {  # each preset at tiny widths; imagenet128 with a batch of 4 so its MBD groups are small
    "digits": ["model.d_widths=[16,8]", "model.g_widths=[16]"],
    "mnist": ["model.d_widths=[16,8]", "model.g_widths=[16]"],
    "cifar10": ["model.d_widths=[8,8]", "model.g_widths=[16,8,8]"],
    "svhn": ["model.d_widths=[8,8]", "model.g_widths=[16,8,8]"],
    "imagenet128": ["model.d_widths=[4,4,4,4,4,4,4,8]", "model.g_widths=[8,4,4,4,4,4]",
                    "model.g_noise_channels=[2,2,1,1,1,1]", "techniques.mbd_kernels=4", "techniques.mbd_dim=3",
                    "techniques.vbn_reference_size=4", "data.batch_size=4"],
    "ring8": ["model.d_widths=[16]", "model.g_widths=[16]", "techniques.mbd_kernels=4"],
    "grid25": ["model.d_widths=[16]", "model.g_widths=[16]", "techniques.mbd_kernels=4"],
    # Table 3: the full model (VBN, K+1 classifier) and the unsupervised one (one logit, no classifier)
    "cifar10_mbd": ["model.d_widths=[8,8]", "model.g_widths=[16,8,8]", "techniques.mbd_kernels=4",
                    "techniques.vbn_reference_size=4"],
    "cifar10_mbd_no_l": ["model.d_widths=[8,8]", "model.g_widths=[16,8,8]", "techniques.mbd_kernels=4",
                         "techniques.vbn_reference_size=4"],
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
    error = attempt(lambda: _load_model_as_igan_does(path))
    assert not marker.exists(), "the exported program's payload ran"
    from pipelines.model_safety import UnsafeModel

    assert isinstance(error, UnsafeModel) and one_line(str(error)), error
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
    error = attempt(lambda: _load_model_as_igan_does(path))
    assert not marker.exists(), "the pickled model's payload ran"
    from pipelines.model_safety import UnsafeModel, unsafe_reason

    assert isinstance(error, UnsafeModel) and "stored pickled" in str(error), error
    (path / "data" / "model.pth").unlink()
    assert unsafe_reason(str(path)) is None
    mlmodel = (path / "MLmodel").read_text()
    (path / "MLmodel").write_text(mlmodel.replace("    code: null", "    code: code"))
    assert "ships Python code" in unsafe_reason(str(path))
