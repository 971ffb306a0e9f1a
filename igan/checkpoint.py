"""igan's one checkpoint format, its writing and its restore, on every path (the plain loop, a Ray
Train worker, a local Tune trial).

A checkpoint is a folder:

* ``state.pt``: :meth:`igan.trainer.Trainer.state_dict` of rank 0 (models, optimisers, averages,
  counters and rank 0's RNG states);
* ``rng-rank<R>.pt``: every rank's RNG states (:func:`rng_state`), so a restart continues each
  rank's noise exactly (a Ray Train checkpoint merges the ranks' folders);
* ``meta.json``: epochs done, step, preset and whatever the caller adds (run id, last metrics);
* ``config.yaml``: the run's config, for people reading the folder.

Checkpoints live on shared volumes, in object stores and as MLflow artifacts that every user can
read and often write, so a checkpoint is data from outside: state files are read with
``torch.load(weights_only=True)``, whose unpickler builds only tensors and plain containers (dict,
list, tuple, str, int, float, bool, None) and refuses every other global, so a crafted file cannot
run code. igan's own checkpoints hold nothing else. The one exception admitted is a NumPy array
(``_reconstruct``, ``ndarray``, ``dtype``: data only), which checkpoints written before RNG states
became tensors hold as the NumPy RNG key, so runs in flight still resume.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from igan.config import Config, dump_yaml

if TYPE_CHECKING:  # the Trainer imports this module for its RNG states
    from igan.trainer import Trainer

STATE, META, CONFIG, RANK_RNG = "state.pt", "meta.json", "config.yaml", "rng-rank{}.pt"


class CheckpointError(ValueError):
    """A state file is missing, damaged or holds more than tensors and plain values; one line
    naming the file."""


# -- RNG states ----------------------------------------------------------------------------------
# NumPy's and Python's RNG states are tuples holding an ndarray / a 625-tuple; kept as they are they
# would make a checkpoint need a full unpickler, so they are stored as tensors and plain values and
# restored bit for bit (the tuple forms of older checkpoints are still accepted).
def numpy_rng_state() -> dict:
    """NumPy's global RNG state as ``{bit_generator, key (int64 tensor), pos, has_gauss,
    cached_gaussian}``."""
    name, key, pos, has_gauss, cached = np.random.get_state()
    return {"bit_generator": str(name), "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def set_numpy_rng_state(state) -> None:
    """Restore what :func:`numpy_rng_state` returned (or ``np.random.get_state()``'s tuple)."""
    if isinstance(state, dict):
        state = (state["bit_generator"], state["key"].numpy().astype(np.uint32), int(state["pos"]),
                 int(state["has_gauss"]), float(state["cached_gaussian"]))
    np.random.set_state(state)


def python_rng_state() -> dict:
    """Python's ``random`` state as ``{version, internal (int64 tensor of 625 words), gauss_next}``."""
    version, internal, gauss_next = random.getstate()
    return {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next}


def set_python_rng_state(state) -> None:
    """Restore what :func:`python_rng_state` returned (or ``random.getstate()``'s tuple)."""
    if isinstance(state, dict):
        state = (int(state["version"]), tuple(int(v) for v in state["internal"].tolist()), state["gauss_next"])
    random.setstate(state)


def rng_state(noise: torch.Generator, device: torch.device) -> dict:
    """Every RNG a training step draws from, as tensors and plain values: torch's global generator
    (dropout, Gaussian noise), the latent generator ``noise``, NumPy's, Python's and, on CUDA,
    ``device``'s."""
    state = {"torch": torch.get_rng_state(), "noise": noise.get_state(), "numpy": numpy_rng_state(),
             "python": python_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, noise: torch.Generator, device: torch.device) -> None:
    """Restore what :func:`rng_state` returned (tensors from any device; keys an older
    checkpoint lacks are left as they are)."""
    torch.set_rng_state(state["torch"].cpu())
    noise.set_state(state["noise"].cpu())
    if "numpy" in state:
        set_numpy_rng_state(state["numpy"])
    if "python" in state:
        set_python_rng_state(state["python"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


# -- reading untrusted state files -----------------------------------------------------------------
def _numpy_array_globals() -> list:
    """What a pickled ``uint32`` ndarray (the NumPy RNG key) references, under NumPy 2's names and
    NumPy 1's (a file written under NumPy 1 names ``numpy.core.multiarray._reconstruct``)."""
    from numpy._core.multiarray import _reconstruct  # NumPy >= 2 (the project pins it)

    return [_reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
            np.dtypes.UInt32DType]


def read_state(path: str | Path) -> dict:
    """The object saved by ``torch.save`` at ``path``, loaded on the CPU with the weights-only
    unpickler (plus plain NumPy arrays, see the module docstring). Raises CheckpointError (one line
    naming ``path``) when it is missing, unreadable, or references anything else, e.g. a pickled
    object whose ``__reduce__`` would run code; nothing in the file runs in that case."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - every failure of an untrusted file is the same answer
        raise CheckpointError(f"{path} is not a checkpoint igan can load safely: it holds more than tensors "
                              f"and plain values, or is damaged ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    """The telling line of a ``torch.load`` failure: the weights-only unpickler's verdict (e.g.
    ``Unsupported global: GLOBAL builtins.exec ...``) when there is one, not torch's advice to load
    with ``weights_only=False``; at most 200 characters."""
    marker = "WeightsUnpickler error:"
    text = str(exc)
    if marker in text:  # the verdict follows the marker, on its line or the next
        text = text.split(marker, 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    text = text.split(" Please use `torch.serialization", 1)[0]
    return f"{type(exc).__name__}: {text}"[:200]


# -- the folder ------------------------------------------------------------------------------------
def write_checkpoint(folder: str | Path, trainer: "Trainer", *, rank: int = 0, epochs_done: int,
                     meta: dict | None = None) -> Path:
    """Write rank ``rank``'s part of a checkpoint into ``folder`` (created): its RNG file, and on
    rank 0 the trainer's state, ``meta.json`` (``epochs_done``, ``step``, ``preset`` plus ``meta``)
    and ``config.yaml``. ``meta.json`` is written last: a folder holding it is complete. Returns
    ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(rng_state(trainer.noise, trainer.device), folder / RANK_RNG.format(rank))
    if rank == 0:
        cfg = trainer.cfg
        torch.save(trainer.state_dict(), folder / STATE)
        (folder / CONFIG).write_text(dump_yaml(cfg))
        record = {"epochs_done": int(epochs_done), "step": trainer.step, "preset": cfg.preset, **(meta or {})}
        (folder / META).write_text(json.dumps(record))
    return folder


def save_checkpoint(trainer: "Trainer", folder: str | Path, epochs_done: int | None = None,
                    meta: dict | None = None) -> Path:
    """A complete one-process checkpoint of ``trainer`` in ``folder``, written beside it first and
    then moved into place (a crash leaves the previous checkpoint whole). ``epochs_done`` defaults
    to the trainer's epoch. Returns ``folder``."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write_checkpoint(tmp, trainer, epochs_done=trainer.epoch if epochs_done is None else epochs_done, meta=meta)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        folder.replace(old)
    tmp.replace(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def read_checkpoint(folder: str | Path) -> tuple[dict, dict]:
    """``(state, meta)`` of a checkpoint folder (a local path). ``state.pt`` is read without running
    code (:func:`read_state`); CheckpointError (one line) when it holds more than tensors and plain
    values, or when the folder is not a checkpoint."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder} is not an igan checkpoint ({META}: {type(exc).__name__})") from None
    return read_state(folder / STATE), meta


def read_rank_rng(folder: str | Path, rank: int) -> dict | None:
    """Rank ``rank``'s RNG state saved in checkpoint ``folder`` (read like ``state.pt``), or None
    when that rank saved none (the world size changed)."""
    rng_file = Path(folder) / RANK_RNG.format(rank)
    return read_state(rng_file) if rng_file.exists() else None


def restore(trainer: "Trainer", folder: str | Path, rank: int = 0) -> tuple[dict, bool]:
    """Load checkpoint ``folder`` into ``trainer``, with rank ``rank``'s own RNG states. Returns
    ``(meta, rng_restored)``; ``rng_restored`` is False when the folder holds no RNG file of this
    rank (the world size grew): the caller gives the rank a fresh stream."""
    state, meta = read_checkpoint(folder)
    rng = read_rank_rng(folder, rank)
    trainer.load_state_dict(state)
    if rng is not None:
        set_rng_state(rng, trainer.noise, trainer.device)
    return meta, rng is not None


def load_trainer(cfg: Config, folder: str | Path, device: str | None = None) -> "Trainer":
    """A fresh Trainer for ``cfg`` restored from checkpoint ``folder``; the state is read before the
    Trainer is built, so a refused file builds nothing (CheckpointError, one line)."""
    from igan.trainer import Trainer

    state, _ = read_checkpoint(folder)
    rng = read_rank_rng(folder, 0)
    trainer = Trainer(cfg, device=device)
    trainer.load_state_dict(state)
    if rng is not None:
        set_rng_state(rng, trainer.noise, trainer.device)
    return trainer
