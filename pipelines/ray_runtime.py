"""Ray start-up for every igan job (shard, train, tune): reach the cluster or start a local Ray,
fail fast with one line when it cannot be reached, and turn Ray's failures into one line."""
from __future__ import annotations

import logging
import os
import socket
from typing import Any

from pipelines.errors import UserError


def check_reachable(address: str, timeout: float = 5.0, what: str = "the Ray cluster") -> None:
    """UserError when ``address`` (``host:port`` or ``scheme://host:port[/...]``) refuses TCP
    connections; Ray itself would retry for minutes without a word. Forms without a port (``auto``)
    are not checked."""
    hostport = address.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(f"cannot reach {what} at {address} ({exc.strerror or exc})") from None


#: Libraries whose INFO lines would sit between igan's own (unless ``--verbose``).
NOISY_LOGGERS = ("ray", "mlflow", "alembic")


def quiet_libraries(verbose: bool = False) -> None:
    """Keep Ray's and MLflow's INFO and WARNING lines (start-up, database migrations, Ray's
    token-authentication notice) out of igan's output unless ``verbose``; their errors still show."""
    import importlib

    for name in NOISY_LOGGERS:
        importlib.import_module(name)  # each sets its loggers' levels when imported: set ours after
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)


def init_ray(address: str | None = None, verbose: bool = False):
    """The ``ray`` module, initialised: the session already running, else the cluster at ``address``
    / ``$RAY_ADDRESS`` (Ray Client ``ray://`` addresses get this checkout's code shipped to the
    workers), else a new local Ray; its log lines below ERROR stay out of the console unless
    ``verbose``. UserError (one line) when it cannot be started or reached."""
    import ray

    if ray.is_initialized():
        return ray
    quiet_libraries(verbose)
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.INFO if verbose else logging.ERROR}
    if address and address.startswith("ray://"):
        import igan
        import pipelines

        kwargs["runtime_env"] = {"py_modules": [os.path.dirname(igan.__file__), os.path.dirname(pipelines.__file__)]}
    if address:
        check_reachable(address)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(include_dashboard=False, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UserError(f"cannot start or reach Ray at {address or 'local'}: "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return ray


def failure_reason(exc: BaseException) -> str:
    """One line saying why a Ray job failed: the worker's own exception line when Ray's text holds
    one (Ray wraps it in ``TrainingFailedError`` / ``RayTaskError`` text), else the first line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.split(":", 1)[0].endswith(("Error", "Exception")) and "TrainingFailedError" not in ln:
            return ln
    return lines[0] if lines else type(exc).__name__


def kill_actor(actor_handle_owner) -> None:
    """Kill the actor behind a Ray queue (or anything with ``.actor``), ignoring one already gone."""
    import ray

    try:
        ray.kill(actor_handle_owner.actor)
    except Exception:  # noqa: BLE001 - already dead, or Ray is shutting down
        pass
