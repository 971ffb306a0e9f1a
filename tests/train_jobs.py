"""What a Ray Train job folder holds, for the tests that kill a job and resume it."""
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
