"""Loading a registered model for use: downloaded, checked to be an igan model of the wanted kind,
loaded safely (:mod:`pipelines.model_safety`) and moved to a device; and drawing samples from a
loaded generator."""
from __future__ import annotations

import copy
import itertools
import tempfile

import numpy as np
import torch
from torch import nn

from igan.config import Config
from pipelines.cli_options import TRUST_FLAG
from pipelines.errors import UserError
from pipelines.registry.export import _example_input
from pipelines.registry.names import METADATA_KEY
from pipelines.registry.resolve import _download


def _load(uri: str, tracking_uri: str, want: str, device: str | torch.device = "cpu",
          trust_pickled: bool = False) -> tuple[nn.Module, Config]:
    """The ``want`` (``generator`` | ``classifier``) model behind ``uri`` on ``device`` (else the
    CPU) and the config it was trained with; UserError when it is not an igan model of that kind
    or cannot be loaded safely (see :func:`load_generator`)."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    from pipelines.model_safety import UnsafeModel, load_pytorch_model

    with tempfile.TemporaryDirectory() as tmp:
        local = _download(uri, tracking_uri, tmp)
        meta = (Model.load(local).metadata or {}).get(METADATA_KEY)
        if not meta:
            raise UserError(f"{uri} is not an igan model (no '{METADATA_KEY}' metadata in its MLmodel)")
        if meta.get("kind") != want:
            raise UserError(f"{uri} is an igan {meta.get('kind')}, not a {want}")
        cfg = Config.from_dict(meta["config"])
        try:
            module = load_pytorch_model(local, trust_pickled)  # on the CPU, where it was exported
        except UnsafeModel as exc:
            hint = "" if trust_pickled else (f"; loading it could run any code it carries (pass {TRUST_FLAG} "
                                             "only for a model you trust)")
            raise UserError(f"refusing to load {uri}: {exc}{hint}") from None
        except MlflowException as exc:
            raise UserError(f"cannot load {uri}: {str(exc).splitlines()[0]}") from None
    if not isinstance(module, torch.fx.GraphModule):
        module.eval()  # pickled modules; exported graphs are traced in eval mode already
    return _to_device(module, torch.device(device), _example_input(want, cfg, n=2)), cfg


def _to_device(module: nn.Module, device: torch.device, example: np.ndarray) -> nn.Module:
    """``module`` moved to ``device`` when it then runs there (an exported graph may hold CPU-only
    constants); otherwise a warning and the CPU module."""
    if device.type == "cpu":
        return module
    import warnings

    try:
        moved = copy.deepcopy(module).to(device)
        with torch.no_grad():
            moved(torch.from_numpy(example).to(device))
        return moved
    except Exception as exc:  # noqa: BLE001 - any failure: stay on the CPU
        warnings.warn(f"the model does not run on {device} ({type(exc).__name__}); using the CPU", stacklevel=3)
        return module


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter or buffer (CPU when it has none)."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return torch.device("cpu")


def load_generator(uri: str, tracking_uri: str, device: str | torch.device = "cpu",
                   trust_pickled: bool = False) -> tuple[nn.Module, Config]:
    """The generator behind ``uri`` (eval mode, on ``device`` when it runs there, else the CPU) and the
    config it was trained with. Only a ``torch.export`` program is loaded; a model stored pickled (or
    shipping code) is refused with a UserError unless ``trust_pickled``
    (:mod:`pipelines.model_safety`)."""
    return _load(uri, tracking_uri, "generator", device, trust_pickled)


def load_classifier(uri: str, tracking_uri: str, device: str | torch.device = "cpu",
                    trust_pickled: bool = False) -> tuple[nn.Module, Config]:
    """The classifier behind ``uri`` (``forward(x)`` -> logits ``[N, K]``) and its config; loaded as
    :func:`load_generator` loads."""
    return _load(uri, tracking_uri, "classifier", device, trust_pickled)


@torch.no_grad()
def generate_samples(generator: nn.Module, cfg: Config, n: int, seed: int = 0,
                     device: str | torch.device | None = None, batch_size: int | None = None) -> torch.Tensor:
    """``n`` samples (CPU, float, model range) from a loaded generator, drawing ``z ~ U(0, 1)`` in
    batches from a generator seeded with ``seed`` exactly as :meth:`igan.trainer.Trainer.generate`
    does (:func:`igan.sampling.draw_samples`: with ``eval.generator_batch_stats`` in batches of the
    training batch size, which the registered program's batch norm normalises by), so a registered
    generator reproduces the trainer's samples for the same seed. ``device`` defaults to the
    generator's own. A module with batch-norm layers (a pickled one) samples on batch statistics
    under the same switch; an exported program carries the mode it was exported in."""
    import contextlib

    from igan.sampling import batch_statistics, draw_samples, uses_batch_statistics

    device = module_device(generator) if device is None else device
    mode = batch_statistics(generator) if uses_batch_statistics(cfg) else contextlib.nullcontext()
    with mode:
        return draw_samples(generator, cfg, n, torch.Generator().manual_seed(seed), device, batch_size)
