"""The MLflow Model Registry side of igan: log a run's generator (and, for semi-supervised runs, its
classifier) as MLflow PyTorch models, register them as ``igan-<preset>-generator`` /
``igan-<preset>-classifier``, move aliases (``latest``; ``champion`` from ``igan tune``), and resolve
and load models for ``igan sample`` / ``igan score`` / ``igan models``.

Model URIs understood everywhere: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` and
``runs:/RUN_ID/generator`` (or ``.../classifier``).

The alias ``latest``: MLflow reserves that alias name (``models:/NAME/latest`` is its built-in "newest
version"), so it cannot be stored as a real alias. igan keeps the contract "alias ``latest`` on each
new version" by treating ``latest`` as a virtual alias that always means the newest version:
``models:/NAME@latest`` resolves to it here, ``igan models`` shows it, and MLflow's own tools reach the
same version as ``models:/NAME/latest``. Other aliases (``champion``) are real MLflow aliases.

Each logged model carries the run's full config in its MLmodel ``metadata`` (key ``igan``) and as
``extra_files/config.yaml``, so a loaded generator knows its pixel range, image shape and data set.

Models are stored as ``torch.export`` programs only (MLflow's ``pt2``), never pickled, and loaded
only in that form unless the caller trusts the model (:mod:`pipelines.model_safety`).

Reading never touches MLflow's global state; logging a model does (MLflow's ``log_model`` reads the
process-wide tracking URI), so it runs under a lock with the URI set and restored around it.
"""
from __future__ import annotations

import copy
import itertools
import os
import re
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from igan.config import Config, dump_yaml
from pipelines.errors import UserError

KINDS = ("generator", "classifier")
#: The virtual alias for the newest version (reserved by MLflow, see the module docstring).
LATEST = "latest"
METADATA_KEY = "igan"
_GLOBAL_URI_LOCK = threading.RLock()


def model_name(preset: str, kind: str) -> str:
    """Registered-model name of ``kind`` (``generator`` | ``classifier``) for ``preset``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    return f"igan-{preset}-{kind}"


class ClassifierLogits(nn.Module):
    """Wraps igan's discriminator so ``forward(x)`` returns only the class logits ``[N, K]`` (D
    returns ``(logits, features)``), the form an MLflow model's signature can describe.

    ``batch_size`` (a discriminator with minibatch discrimination: its training batch size) makes
    D compare each image only with those of its group of ``batch_size`` consecutive images, as
    ``Trainer.classify``'s chunks do: the layer's statistics sum over the other images of a batch, so
    one call on 1,000 images would otherwise give each image ten times the statistic D learned from,
    and other logits."""

    def __init__(self, model: nn.Module, batch_size: int | None = None):
        super().__init__()
        self.model = model
        self.batch_size = batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[N, K]`` of images ``x`` in model range."""
        size = getattr(self, "batch_size", None)  # models registered before the attribute existed
        # An int group size makes D's minibatch discrimination compare rows in consecutive groups
        # of that size, the same as classifying chunk by chunk, but as shapes torch.export traces
        # for any N (a loop over x.split(size) exports only for the example's N).
        out = self.model(x, group_sizes=size) if size else self.model(x)
        return out[0] if isinstance(out, (tuple, list)) else out


# -- MLflow plumbing ----------------------------------------------------------------------------

def _client(tracking_uri: str):
    from pipelines.tracking import make_client

    return make_client(tracking_uri)


@contextmanager
def _process_tracking_uri(uri: str) -> Iterator[None]:
    """Temporarily make ``uri`` MLflow's process-wide tracking and registry URI (for the fluent
    helpers ``log_model`` relies on), restoring the previous values and environment after."""
    import mlflow
    from mlflow.tracking._model_registry import utils as reg_utils
    from mlflow.tracking._tracking_service import utils as trk_utils

    with _GLOBAL_URI_LOCK:
        old_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        old_tracking, old_registry = trk_utils._tracking_uri, reg_utils._registry_uri
        try:
            mlflow.set_tracking_uri(uri)
            mlflow.set_registry_uri(uri)
            yield
        finally:
            trk_utils.set_tracking_uri(old_tracking)
            reg_utils._registry_uri = old_registry
            for key, value in old_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _modules_of(trainer_or_modules: Any, cfg: Config) -> dict[str, nn.Module]:
    """``{"generator": G, "classifier": C?}`` from a Trainer or such a dict; the classifier only for
    semi-supervised configs. Modules are CPU copies in eval mode (the trainer is left untouched)."""
    if isinstance(trainer_or_modules, dict):
        unknown = set(trainer_or_modules) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown module keys {sorted(unknown)}; allowed: {', '.join(KINDS)}")
        found = dict(trainer_or_modules)
    else:
        found = {"generator": trainer_or_modules.G}
        if cfg.techniques.semi_supervised:
            found["classifier"] = trainer_or_modules.classifier()
    if "generator" not in found:
        raise ValueError("register_models needs a generator")
    out = {}
    for kind, module in found.items():
        if module is None or (kind == "classifier" and not cfg.techniques.semi_supervised):
            continue
        module = getattr(module, "module", module) if isinstance(
            module, nn.parallel.DistributedDataParallel) else module
        was_training = module.training
        copied = copy.deepcopy(module).cpu().float().eval()
        module.train(was_training)
        if kind == "classifier" and not isinstance(copied, ClassifierLogits):
            mbd_batch = cfg.data.batch_size if cfg.techniques.minibatch_discrimination else None
            copied = ClassifierLogits(copied, mbd_batch).eval()
        out[kind] = copied
    return out


def _example_input(kind: str, cfg: Config, n: int = 4) -> np.ndarray:
    gen = torch.Generator().manual_seed(0)
    if kind == "generator":
        return torch.rand(n, cfg.model.z_dim, generator=gen).numpy()
    from igan.data.pixels import to_model_range

    if cfg.model.name == "toy_mlp":
        return torch.randn(n, 2, generator=gen).numpy()
    shape = (n, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    pixels = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
    return to_model_range(pixels, cfg.data.pixel_range).numpy()


def _pip_requirements() -> list[str]:
    import mlflow

    return [f"torch=={torch.__version__.split('+')[0]}", "numpy", "pyyaml", f"mlflow=={mlflow.__version__}"]


class NotExportable(ValueError):
    """A module does not export with ``torch.export`` for every batch size; one line saying why."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def check_sizes(module: nn.Module, n: int) -> list[int]:
    """Batch sizes an export of ``module`` (example of ``n`` rows) is checked on: ``n + 1`` and, for a
    classifier grouping its rows for minibatch discrimination, one row past a whole group."""
    sizes = [n + 1]
    group = getattr(module, "batch_size", None) if isinstance(module, ClassifierLogits) else None
    if group and group + 1 not in sizes:
        sizes.append(group + 1)
    return sizes


def check_exports(module: nn.Module, example: np.ndarray, batches: list[np.ndarray]) -> None:
    """Export ``module`` with ``torch.export`` on ``example`` with a dynamic batch dimension, as
    MLflow's ``pt2`` format does, and check that the program gives the module's own outputs on each
    of ``batches`` (other batch sizes). NotExportable (one line) otherwise: igan then does not
    register the module rather than store it pickled."""
    name = type(module).__name__
    try:
        program = torch.export.export(module, (torch.from_numpy(example),),
                                      dynamic_shapes=({0: torch.export.Dim.AUTO},))
    except Exception as exc:  # noqa: BLE001 - any export failure has the same consequence
        raise NotExportable(f"{name} does not export with torch.export ({_first_line(exc)})") from None
    exported = program.module()
    for batch in batches:
        x = torch.from_numpy(batch)
        with torch.no_grad():
            try:
                got = exported(x)
            except Exception as exc:  # noqa: BLE001
                raise NotExportable(f"{name}'s exported program does not run on {len(x)} rows "
                                    f"({_first_line(exc)})") from None
            want = module(x)
        if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
            raise NotExportable(f"{name}'s exported program computes other outputs than the module on {len(x)} rows")


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


# -- resolving ----------------------------------------------------------------------------------

_MODELS_ALIAS = re.compile(r"^models:/([^/@]+)@([^/@]+)$")
_MODELS_VERSION = re.compile(r"^models:/([^/@]+)/(\d+|[Ll][Aa][Tt][Ee][Ss][Tt])$")
_RUNS = re.compile(r"^runs:/([^/]+)/(.+)$")
URI_FORMS = "models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/generator"


def check_tracking_uri(tracking_uri: str, timeout: float = 5.0, must_exist: bool = True) -> None:
    """UserError (one line, the URI redacted) when the store behind ``tracking_uri`` cannot be used:
    a server that does not answer or refuses the credentials (HTTP 401/403), a database whose
    driver is not installed, or, with ``must_exist``, a sqlite store whose database file does not
    exist (so read-only commands fail fast, not after MLflow's minutes of retries or with an empty
    new database)."""
    from pipelines.defaults import redact_uri
    from pipelines.tracking import local_store_path, make_client

    db = local_store_path(tracking_uri)
    if db is not None:
        if must_exist and not db.expanduser().exists():
            raise UserError(f"no MLflow store at {redact_uri(tracking_uri)} (nothing trained yet? run `igan train`, "
                            "or pass --tracking-uri)")
        return
    if tracking_uri.startswith(("http://", "https://")):
        _check_reachable(tracking_uri, timeout)
        _check_credentials(tracking_uri, timeout)
    else:
        make_client(tracking_uri)  # a database: UserError when its driver is missing


def _check_reachable(tracking_uri: str, timeout: float) -> None:
    """UserError when nothing answers at the server's ``/health`` (asked without credentials:
    urllib cannot send a URI's ``user:password@``, and any HTTP answer will do)."""
    import urllib.error
    import urllib.request

    from pipelines.defaults import redact_uri, strip_credentials

    url = strip_credentials(tracking_uri).rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answers (perhaps behind auth or a proxy without /health)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"cannot reach the MLflow server at {redact_uri(tracking_uri)}: {reason}") from None


#: An endpoint behind a server's authentication (``/health`` is not), cheap to answer.
_AUTH_PROBE = "/api/2.0/mlflow/experiments/search"


def _check_credentials(tracking_uri: str, timeout: float) -> None:
    """UserError when the server answers an API request with HTTP 401 or 403. The request goes
    through MLflow's own HTTP layer, so it carries what every later request will: the URI's
    ``user:password@`` or ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``/``_TOKEN``."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    from pipelines.defaults import redact_uri
    from pipelines.errors import CREDENTIALS_HINT

    try:
        response = http_request(get_default_host_creds(tracking_uri), _AUTH_PROBE, "GET",
                                params={"max_results": 1}, max_retries=0, timeout=timeout,
                                raise_on_status=False)
    except MlflowException:
        return  # it answered /health: a slow or failed probe is left to the command's own requests and retries
    if response.status_code in (401, 403):
        raise UserError(f"the MLflow server at {redact_uri(tracking_uri)} refused the credentials (HTTP "
                        f"{response.status_code} {response.reason}): {CREDENTIALS_HINT}")


def _registered_names(client) -> list[str]:
    names, token = [], None
    while True:
        page = client.search_registered_models(max_results=100, page_token=token)
        names += [m.name for m in page]
        token = page.token
        if not token:
            return sorted(names)


def _get_registered(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException:
        known = [n for n in _registered_names(client) if n.startswith("igan-")]
        raise UserError(f"no registered model '{name}'; registered: {', '.join(known) or 'none'}") from None


def _version_numbers(client, name: str) -> list[str]:
    versions = client.search_model_versions(f"name='{name}'")
    return sorted((str(v.version) for v in versions), key=int)


def _check_version(client, name: str, version: str):
    from mlflow.exceptions import MlflowException

    _get_registered(client, name)
    try:
        return client.get_model_version(name, version)
    except MlflowException:
        raise UserError(f"model '{name}' has no version {version}; versions: "
                        f"{', '.join(_version_numbers(client, name)) or 'none'}") from None


def resolve_model_uri(uri: str, tracking_uri: str) -> tuple[str | None, str | None, str]:
    """``(name, version, run_id)`` of a model URI. For ``runs:/`` URIs name and version are those of
    a registered version logged from that run's model when there is one, else None. UserError (one
    line, listing what exists) for a malformed URI or a missing model, alias, version or run."""
    name, version, run_id, _ = _resolve(_client(tracking_uri), uri, tracking_uri)
    return name, version, run_id


def _resolve(client, uri: str, tracking_uri: str) -> tuple[str | None, str | None, str, str | None]:
    """``(name, version, run_id, logged_model_id)`` of ``uri``, with one-line UserErrors."""
    if m := _MODELS_ALIAS.match(uri):
        name, alias = m.groups()
        model = _get_registered(client, name)
        if alias.lower() == LATEST:
            return _version_info(_newest(client, name))
        aliases = dict(model.aliases or {})
        if alias not in aliases:
            newest = _version_numbers(client, name)[-1:]
            shown = ", ".join([f"@{a} (v{v})" for a, v in sorted(aliases.items())]
                              + [f"@{LATEST} (v{v})" for v in newest])
            raise UserError(f"model '{name}' has no alias '{alias}'; aliases: {shown}")
        return _version_info(client.get_model_version_by_alias(name, alias))
    if m := _MODELS_VERSION.match(uri):
        name, version = m.groups()
        if version.lower() == LATEST:
            _get_registered(client, name)
            return _version_info(_newest(client, name))
        return _version_info(_check_version(client, name, version))
    if m := _RUNS.match(uri):
        return _resolve_run(client, *m.groups(), tracking_uri=tracking_uri)
    raise UserError(f"cannot read model URI '{uri}'; expected {URI_FORMS}")


def _version_info(mv) -> tuple[str, str, str, str | None]:
    model_id = getattr(mv, "model_id", None)
    if not model_id and str(mv.source).startswith("models:/m-"):
        model_id = str(mv.source)[len("models:/"):]
    return mv.name, str(mv.version), mv.run_id, model_id


def _resolve_run(client, run_id: str, path: str, tracking_uri: str):
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        from pipelines.defaults import redact_uri

        raise UserError(f"no MLflow run '{run_id}' in {redact_uri(tracking_uri)}") from None
    kind = path.strip("/")
    outputs = run.outputs.model_outputs if run.outputs is not None else []
    found = []
    for output in sorted(outputs, key=lambda o: o.step):
        logged = client.get_logged_model(output.model_id)
        if logged.name == kind:
            found.append(logged.model_id)
    if not found:
        names = sorted({client.get_logged_model(o.model_id).name for o in outputs})
        raise UserError(f"run '{run_id}' has no logged model '{kind}'; it has: {', '.join(names) or 'none'}")
    model_id = found[-1]
    for mv in client.search_model_versions(f"run_id='{run_id}'"):
        if _version_info(mv)[3] == model_id:
            return mv.name, str(mv.version), run_id, model_id
    return None, None, run_id, model_id


def _newest(client, name: str):
    numbers = _version_numbers(client, name)
    if not numbers:
        raise UserError(f"model '{name}' has no versions")
    return client.get_model_version(name, numbers[-1])


def _download(uri: str, tracking_uri: str, dst: str) -> str:
    """Resolve ``uri`` (with clear errors) and download its model folder into ``dst``. The logged
    model's artifact location is downloaded directly, with the explicit tracking URI (MLflow's
    ``models:/`` download path would consult the process-wide URI)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    name, version, run_id, model_id = _resolve(client, uri, tracking_uri)
    try:
        if model_id:
            location = client.get_logged_model(model_id).artifact_location
        else:  # a version registered from a plain artifact path (not an igan-made version)
            location = client.get_model_version_download_uri(name, version)
        return mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=dst,
                                                   tracking_uri=tracking_uri, registry_uri=tracking_uri)
    except MlflowException as exc:
        raise UserError(f"cannot download model {uri}: {str(exc).splitlines()[0]}") from None


#: The per-command opt-in to load a model stored pickled (``igan sample`` / ``igan score``).
TRUST_FLAG = "--trust-pickled-model"


def _load(uri: str, tracking_uri: str, want: str, device: str | torch.device = "cpu",
          trust_pickled: bool = False) -> tuple[nn.Module, Config]:
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


# -- listing ------------------------------------------------------------------------------------

SUMMARY_METRICS = tuple(f"{role}_{name}" for role in ("val", "test")
                        for name in ("ssl_error", "inception_score", "modes_captured", "high_quality_fraction"))


def list_models(tracking_uri: str, name: str | None = None, with_metrics: bool = True) -> list[dict]:
    """Registered igan models (names starting ``igan-``), or only ``name``: for each, ``name``,
    ``aliases`` (alias -> version) and ``versions`` (newest first), each with ``version``,
    ``aliases``, ``run_id``, ``created`` (ms since the epoch), ``status``, ``uri`` and, with
    ``with_metrics``, the source run's latest :data:`SUMMARY_METRICS` that it logged."""
    client = _client(tracking_uri)
    if name is not None:
        models = [_get_registered(client, name)]
    else:
        models = [client.get_registered_model(n) for n in _registered_names(client) if n.startswith("igan-")]
    run_metrics: dict[str, dict] = {}
    out = []
    for model in models:
        aliases = {a: str(v) for a, v in (model.aliases or {}).items()}
        numbers = _version_numbers(client, model.name)
        if numbers:
            aliases[LATEST] = numbers[-1]
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        versions = []
        for mv in sorted(client.search_model_versions(f"name='{model.name}'"), key=lambda v: -int(v.version)):
            entry = {"version": str(mv.version), "aliases": sorted(by_version.get(str(mv.version), [])),
                     "run_id": mv.run_id, "created": mv.creation_timestamp, "status": mv.status,
                     "uri": f"models:/{model.name}/{mv.version}"}
            if with_metrics and mv.run_id:
                if mv.run_id not in run_metrics:
                    run_metrics[mv.run_id] = _summary_metrics(client, mv.run_id)
                entry["metrics"] = run_metrics[mv.run_id]
            versions.append(entry)
        out.append({"name": model.name, "aliases": {a: str(v) for a, v in sorted(aliases.items())},
                    "versions": versions})
    return out


def _summary_metrics(client, run_id: str) -> dict[str, float]:
    from mlflow.exceptions import MlflowException

    try:
        metrics = client.get_run(run_id).data.metrics
    except MlflowException:
        return {}
    return {k: float(metrics[k]) for k in SUMMARY_METRICS if k in metrics}


@torch.no_grad()
def generate_samples(generator: nn.Module, cfg: Config, n: int, seed: int = 0,
                     device: str | torch.device | None = None, batch_size: int = 500) -> torch.Tensor:
    """``n`` samples (CPU, float, model range) from a loaded generator, drawing ``z ~ U(0, 1)`` in
    batches from a generator seeded with ``seed`` exactly as :meth:`igan.trainer.Trainer.generate`
    does, so a registered generator reproduces the trainer's samples for the same seed. ``device``
    defaults to the generator's own."""
    device = module_device(generator) if device is None else device
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch_size):
        z = torch.rand(min(batch_size, n - start), cfg.model.z_dim, generator=gen)
        out.append(generator(z.to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)
