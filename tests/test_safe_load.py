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
from igan.checkpoint import CheckpointError, read_state
from igan.config import apply_overrides
from igan.loop import load_checkpoint, save_checkpoint
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


# -- checkpoints ---------------------------------------------------------------------------------

def _crafted_checkpoint(folder, marker, poisoned: str):
    """A checkpoint folder as the worker writes it, with ``poisoned`` (state.pt or rng-rank0.pt)
    replaced by a pickle carrying the payload."""
    from pipelines.worker import META, RANK_RNG, STATE

    cfg = apply_overrides(get_preset("digits"), TINY_DIGITS)
    trainer = Trainer(cfg, device="cpu")
    folder.mkdir()
    torch.save(trainer.state_dict(), folder / STATE)
    torch.save({"torch": torch.get_rng_state()}, folder / RANK_RNG.format(0))
    (folder / META).write_text(json.dumps({"epochs_done": 1, "step": 1, "run_id": None, "metrics": {}}))
    torch.save({"G": Payload(marker), "step": 1}, folder / poisoned)
    return cfg


@pytest.mark.parametrize("poisoned", ["state.pt", "rng-rank0.pt"])
def test_crafted_worker_checkpoint_does_not_run_its_payload(tmp_path, poisoned):
    from pipelines.worker import read_checkpoint, read_rank_rng

    marker = tmp_path / "payload-ran"
    _crafted_checkpoint(tmp_path / "ckpt", marker, poisoned)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tmp_path / "ckpt")
        read_rank_rng(tmp_path / "ckpt", 0)
    assert not marker.exists(), "the checkpoint's payload ran"
    message = str(info.value)
    assert _one_line(message) and poisoned in message and "exec" in message, message


def test_crafted_trainer_checkpoint_does_not_run_its_payload(tmp_path):
    marker = tmp_path / "payload-ran"
    cfg = _crafted_checkpoint(tmp_path / "ckpt", marker, "state.pt")
    with pytest.raises(CheckpointError, match="state.pt") as info:
        load_checkpoint(cfg, tmp_path / "ckpt" / "state.pt")
    assert not marker.exists(), "the checkpoint's payload ran"
    assert _one_line(str(info.value))


def test_checkpoint_holds_only_tensors_and_plain_values(tmp_path):
    cfg = apply_overrides(get_preset("digits"), TINY_DIGITS)
    path = save_checkpoint(Trainer(cfg, device="cpu"), tmp_path / "ck.pt")
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == []


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
    torch.save(state, tmp_path / "ck.pt")
    expected = _draws()
    np.random.seed(99)
    random.seed(99)
    load_checkpoint(cfg, tmp_path / "ck.pt")
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

