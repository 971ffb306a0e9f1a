"""igan's checkpoint format (igan.checkpoint): a crafted state or RNG file does not run its payload
(the weights-only unpickler), a checkpoint holds only tensors and plain values, and RNG states
restore exactly (current and older formats). Exact resume itself: tests/unit/igan/test_trainer.py."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from helpers.payloads import Payload, attempt, one_line
from igan.checkpoint import META, RANK_RNG, STATE, load_trainer, save_checkpoint
from igan.config import apply_overrides
from igan.presets import get_preset
from igan.trainer import Trainer

TINY_DIGITS = ["model.d_widths=[16,8]", "model.g_widths=[16]", "techniques.historical_averaging=true"]


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
    error = attempt(lambda: _read_worker_checkpoint(tmp_path / "ckpt"))
    assert not marker.exists(), "the checkpoint's payload ran"
    from igan.checkpoint import CheckpointError

    assert isinstance(error, CheckpointError), error
    assert one_line(str(error)) and poisoned in str(error) and "exec" in str(error), error


def test_crafted_trainer_checkpoint_does_not_run_its_payload(tmp_path):
    marker = tmp_path / "payload-ran"
    cfg = _crafted_checkpoint(tmp_path / "ckpt", marker, "state.pt")
    error = attempt(lambda: load_trainer(cfg, tmp_path / "ckpt"))
    assert not marker.exists(), "the checkpoint's payload ran"
    from igan.checkpoint import CheckpointError

    assert isinstance(error, CheckpointError) and "state.pt" in str(error) and one_line(str(error)), error


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
