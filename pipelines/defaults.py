"""The one place for defaults shared by every ``igan`` command.

Everything local lives under ``IGAN_HOME`` (``$IGAN_HOME``, else ``~/.igan``)::

    <IGAN_HOME>/mlflow.db        default MLflow tracking store (sqlite)
    <IGAN_HOME>/mlartifacts      default MLflow artifact location
    <IGAN_HOME>/ray_results      default Ray Train storage (checkpoints) for ``igan train --storage``
    <IGAN_HOME>/data/digits      the embedded digits set, sharded on first use

The tracking URI is resolved the same way by every command (``train``, ``tune``, ``sample``, ``score``,
``models``), so ``igan models`` finds what ``igan train`` registered: ``--tracking-uri``, else
``$MLFLOW_TRACKING_URI``, else the sqlite store above.

Import stays light (no mlflow, no ray): the CLI imports this module to build its help text.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "IGAN_HOME"
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"

DEFAULT_EXPERIMENT = "igan"
DEFAULT_PRESET = "digits"
DEFAULT_MAX_FAILURES = 3


def igan_home() -> Path:
    """``$IGAN_HOME`` if set (``~`` expanded), else ``~/.igan``. Not created here."""
    value = os.environ.get(ENV_HOME)
    return Path(value).expanduser() if value else Path.home() / ".igan"


def default_tracking_uri() -> str:
    """``sqlite:///<IGAN_HOME>/mlflow.db`` (absolute path, so four slashes on POSIX)."""
    return f"sqlite:///{(igan_home() / 'mlflow.db').resolve()}"


def default_artifact_location() -> str:
    """``<IGAN_HOME>/mlartifacts`` as a ``file://`` URI (new experiments in the default store put
    their artifacts there)."""
    return (igan_home() / "mlartifacts").resolve().as_uri()


def default_storage() -> str:
    """Default Ray Train storage path for checkpoints: ``<IGAN_HOME>/ray_results``."""
    return str((igan_home() / "ray_results").resolve())


def digits_cache() -> Path:
    """Where the embedded digits set is sharded on first use: ``<IGAN_HOME>/data/digits``."""
    return igan_home() / "data" / "digits"


def turing_db() -> Path:
    """The SQLite database of ``igan turing`` (image sets and answers): ``<IGAN_HOME>/turing.db``."""
    return igan_home() / "turing.db"


def resolve_tracking_uri(arg: str | None = None) -> str:
    """The tracking URI a command uses: ``arg`` (``--tracking-uri``), else ``$MLFLOW_TRACKING_URI``,
    else :func:`default_tracking_uri`. For the default sqlite store the parent folder is created so
    MLflow can open the database."""
    if arg:
        return arg
    env = os.environ.get(ENV_TRACKING_URI)
    if env:
        return env
    ensure_home()
    return default_tracking_uri()


def is_default_store(tracking_uri: str) -> bool:
    """True when ``tracking_uri`` is the local default sqlite store."""
    return tracking_uri == default_tracking_uri()


def ensure_home() -> Path:
    """Create ``IGAN_HOME`` if missing and return it."""
    home = igan_home()
    home.mkdir(parents=True, exist_ok=True)
    return home


def ui_command(tracking_uri: str) -> str:
    """The shell command that opens the MLflow UI for ``tracking_uri`` (for a server URI the
    answer is simply to open it in a browser)."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri} in a browser"
    cmd = f"mlflow ui --backend-store-uri {tracking_uri}"
    if is_default_store(tracking_uri):
        cmd += f" --default-artifact-root {default_artifact_location()}"
    return cmd
