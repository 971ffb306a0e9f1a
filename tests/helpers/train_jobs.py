"""Training jobs in the tests: what a Ray Train job folder holds (for the tests that kill a job and
resume it) and the ``igan train`` arguments of the multi-node jobs."""
from __future__ import annotations

from pathlib import Path

from igan.checkpoint import META

#: Ray Train's record of the checkpoints it has registered.
SNAPSHOT = "checkpoint_manager_snapshot.json"


def job_checkpoints(job: Path) -> list[Path]:
    """igan's complete checkpoint folders (their ``meta.json`` written) under ``job``, by name."""
    return sorted(p for p in job.glob("checkpoint_*") if (p / META).exists())


def checkpoint_registered(job: Path) -> bool:
    """True once Ray Train has registered a checkpoint of ``job``: from then on a restart continues
    from it (a checkpoint folder alone may not be registered yet)."""
    return bool(job_checkpoints(job)) and (job / SNAPSHOT).exists()


#: The multi-node jobs' config: 4 epochs x 5 steps of tiny models, a checkpoint every epoch.
MULTINODE_TINY = ["model.d_widths=[32,16]", "model.g_widths=[32]", "train.epochs=4", "train.steps_per_epoch=5",
                  "eval.every=2", "eval.scorer=none", "train.checkpoint_every=1"]


def multinode_train_args(digits: str, storage, name: str, tracking: str) -> list[str]:
    """``igan train ...`` of a 2-worker job on ``digits`` shards, no registration, ``--json``."""
    args = ["igan", "train", "--workers", "2", "--cpus-per-worker", "1", "--threads", "1", "--data", digits,
            "--storage", str(storage), "--name", name, "--tracking-uri", tracking, "--experiment", "multinode",
            "--no-register", "--json"]
    return args + [a for kv in MULTINODE_TINY for a in ("--set", kv)]
