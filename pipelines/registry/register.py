"""Logging a run's models and registering them: each module as an MLflow ``pt2`` model in its run,
a new version of ``igan-<preset>-<kind>``, and aliases. MLflow's ``log_model`` reads the
process-wide tracking URI, so logging runs under a lock with that URI set and restored around it."""
from __future__ import annotations

import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from igan.config import Config, dump_yaml
from pipelines.errors import UserError
from pipelines.registry.export import NotExportable, _example_input, _modules_of, check_exports, check_sizes
from pipelines.registry.lookup import _check_version, _client
from pipelines.registry.names import LATEST, METADATA_KEY, model_name

_GLOBAL_URI_LOCK = threading.RLock()


@contextmanager
def _process_tracking_uri(uri: str) -> Iterator[None]:
    """Temporarily make ``uri`` MLflow's process-wide tracking and registry URI (for the fluent
    helpers ``log_model`` relies on), restoring the previous values and environment after."""
    import mlflow

    with _GLOBAL_URI_LOCK, _mlflow_uris_restored():
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        yield


@contextmanager
def _mlflow_uris_restored() -> Iterator[None]:
    """Put MLflow's process-wide tracking and registry URIs, and their environment variables, back
    as they were on leaving, unset ones unset.

    Reads MLflow's private module state (checked against MLflow 3.17.2): the public
    ``mlflow.get_tracking_uri()`` / ``get_registry_uri()`` return the resolved default when no URI
    is set, and no public call unsets the registry URI, so restoring through them would pin that
    default for the rest of the process."""
    from mlflow.tracking._model_registry import utils as reg_utils
    from mlflow.tracking._tracking_service import utils as trk_utils

    old_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    old_tracking, old_registry = trk_utils._tracking_uri, reg_utils._registry_uri
    try:
        yield
    finally:
        trk_utils.set_tracking_uri(old_tracking)
        reg_utils._registry_uri = old_registry
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _pip_requirements() -> list[str]:
    """The pip requirements logged with each model: this process's torch (without its local
    ``+cu...`` tag) and MLflow versions, numpy and pyyaml."""
    import mlflow

    return [f"torch=={torch.__version__.split('+')[0]}", "numpy", "pyyaml", f"mlflow=={mlflow.__version__}"]


def register_models(run_id: str, trainer_or_modules: Any, cfg: Config, tracking_uri: str,
                    alias: str = "latest") -> dict[str, str]:
    """Log the run's models and register them, setting ``alias`` on each new version.

    ``trainer_or_modules`` is an :class:`igan.trainer.Trainer` (its ``G``, and for semi-supervised
    configs its EMA classifier) or ``{"generator": G, "classifier": C}``. Each is logged in run
    ``run_id`` as an MLflow PyTorch model named ``generator`` / ``classifier`` (CPU, eval mode) with a
    signature, an input example (latent ``z`` float32 ``[N, z_dim]``; real-shaped images for the
    classifier), the config in its metadata and ``extra_files/config.yaml``, then registered as
    ``igan-<preset>-<kind>``. Returns ``{"generator": "models:/igan-<preset>-generator/<v>", ...}``.

    Models are stored only as ``torch.export`` programs (MLflow's ``pt2``), which load without
    unpickling code. A module that does not export (:func:`check_exports`) is not registered: one
    line on stderr, the run tag ``igan.unregistered.<kind>`` with the reason, and it is missing from
    the result; the other modules and the run are kept.
    """
    import mlflow.pytorch
    from mlflow.models import infer_signature

    client = _client(tracking_uri)
    experiment_id = client.get_run(run_id).info.experiment_id  # also fails early on a bad run id
    modules = _modules_of(trainer_or_modules, cfg)
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / "config.yaml"
        config_file.write_text(dump_yaml(cfg))
        for kind, module in modules.items():
            example = _example_input(kind, cfg)
            name = model_name(cfg.preset, kind)
            others = [_example_input(kind, cfg, n) for n in check_sizes(module, len(example))]
            try:
                check_exports(module, example, others)
            except NotExportable as exc:
                _not_registered(client, run_id, kind, name, str(exc))
                continue
            with torch.no_grad():
                prediction = module(torch.from_numpy(example)).detach().float().numpy()
            signature = infer_signature(example, prediction)
            metadata = {METADATA_KEY: {"kind": kind, "preset": cfg.preset, "registered_model": name,
                                       "source_run_id": run_id, "serialization": "pt2",
                                       "config": cfg.to_dict()}}
            # The logged model is created explicitly in the run's experiment (MLflow's fluent path
            # would pick the process's "active" experiment). log_model and the version creation read
            # MLflow's process-wide URI (the sqlite registry store looks the logged model up through
            # a default client), so both run under it.
            logged = client.create_logged_model(experiment_id, name=kind, source_run_id=run_id,
                                                tags={"igan.kind": kind, "igan.preset": cfg.preset},
                                                model_type=f"igan-{kind}")
            with _process_tracking_uri(tracking_uri):
                mlflow.pytorch.log_model(
                    pytorch_model=module, name=kind, signature=signature, input_example=example,
                    metadata=metadata, extra_files=[str(config_file)],
                    pip_requirements=_pip_requirements(), serialization_format="pt2",
                    run_id=run_id, model_id=logged.model_id)
                client.finalize_logged_model(logged.model_id, "READY")
                version = _create_version(client, name, logged.model_id, run_id, kind, cfg)
            if alias.lower() != LATEST:  # the newest version *is* latest (virtual alias)
                client.set_registered_model_alias(name, alias, version)
            out[kind] = f"models:/{name}/{version}"
    client.set_tag(run_id, "igan.registered_models", " ".join(out.values()))
    return out


def _not_registered(client, run_id: str, kind: str, name: str, reason: str) -> None:
    """Say loudly that ``kind`` was not registered and why: one stderr line and a run tag."""
    import sys

    print(f"igan: {name} not registered: {reason} (igan stores models only as torch.export programs, "
          "never pickled)", file=sys.stderr, flush=True)
    client.set_tag(run_id, f"igan.unregistered.{kind}", reason[:5000])


def _create_version(client, name: str, model_id: str, run_id: str, kind: str, cfg: Config) -> str:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(
            name, tags={"igan.kind": kind, "igan.preset": cfg.preset},
            description=f"igan {kind} for preset '{cfg.preset}' (Improved Techniques for Training GANs)")
    except MlflowException as exc:
        if "ALREADY_EXISTS" not in str(exc.error_code):
            raise
    mv = client.create_model_version(name, source=f"models:/{model_id}", run_id=run_id, model_id=model_id,
                                     tags={"igan.kind": kind, "igan.preset": cfg.preset})
    return str(mv.version)


def set_alias(name: str, version: str | int, alias: str, tracking_uri: str) -> None:
    """Point ``alias`` (e.g. ``champion``) of registered model ``name`` at ``version``. ``latest`` is
    virtual (always the newest version) and cannot be moved: UserError."""
    if alias.lower() == LATEST:
        raise UserError("alias 'latest' always means the newest version and cannot be set")
    client = _client(tracking_uri)
    _check_version(client, name, str(version))
    client.set_registered_model_alias(name, alias, str(version))
