"""The registry's vocabulary: the kinds of model igan registers, their registered-model names, the
virtual alias ``latest`` and the key of igan's metadata in an MLmodel."""
from __future__ import annotations

KINDS = ("generator", "classifier")
#: The virtual alias for the newest version (reserved by MLflow, see :mod:`pipelines.registry`).
LATEST = "latest"
METADATA_KEY = "igan"


def model_name(preset: str, kind: str) -> str:
    """Registered-model name of ``kind`` (``generator`` | ``classifier``) for ``preset``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    return f"igan-{preset}-{kind}"
