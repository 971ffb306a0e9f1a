"""MLflow tracking for one training job: :class:`RunTracker` opens (or resumes) one run and logs the
flattened config, per-epoch metrics, sample grids, the final config and checkpoints to it.

Everything goes through an :class:`mlflow.MlflowClient` bound to an explicit tracking URI and run id,
never through MLflow's global "active run", so several trackers can live in one process (Ray Tune
trials next to their parent search run) and a tracker never leaks state into another.

Where artifacts go: a tracking server decides itself (``mlflow server`` serves them from its
``--artifacts-destination``); for a local sqlite store new experiments put them beside the database
(``<IGAN_HOME>/mlartifacts`` for the default store), never in the current directory.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from igan.config import Config, dump_yaml
from pipelines.defaults import redact_text, redact_uri

#: Tag holding why a run failed (non-finite loss, exception text, ...).
FAILURE_TAG = "igan.failure_reason"
#: MLflow's limits: entities per ``log_batch`` call (params and tags count 100 at most) and the
#: longest param value; tag values are limited too.
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 5000
#: MLflow's switch for the run and experiment URLs it prints when a run ends.
SUPPRESS_URL_ENV = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


def local_store_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` tracking URI, else None (servers, other databases)."""
    if tracking_uri.startswith("sqlite:///"):
        from urllib.parse import unquote

        return Path(unquote(tracking_uri[len("sqlite:///"):].split("?", 1)[0]))
    return None


def artifact_location_for(tracking_uri: str) -> str | None:
    """The artifact location new experiments get in this store: None for a tracking server (it
    chooses, e.g. its ``--artifacts-destination``); for sqlite, ``<IGAN_HOME>/mlartifacts`` when it
    is the default store, else an ``mlartifacts`` folder beside the database file."""
    db = local_store_path(tracking_uri)
    if db is None:
        return None
    from pipelines.defaults import default_artifact_location, is_default_store

    if is_default_store(tracking_uri):
        return default_artifact_location()
    return (db.expanduser().resolve().parent / "mlartifacts").as_uri()


def make_client(tracking_uri: str):
    """An :class:`mlflow.MlflowClient` for ``tracking_uri`` (tracking and registry), creating the
    parent folder of a sqlite database first. UserError (the URI redacted) when the store's
    database driver is not installed (``postgresql://`` without psycopg, ``mysql://``...). A URI
    with credentials turns off MLflow's printing of run URLs in this process."""
    from mlflow import MlflowClient

    db = local_store_path(tracking_uri)
    if db is not None:
        db.expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    if redact_uri(tracking_uri) != tracking_uri:
        # MLflow prints "View run ... at: <tracking URI>/#/..." when a run ends, password and all;
        # igan shows the run's URL itself, redacted. Set for the process: trial actors end runs too.
        os.environ[SUPPRESS_URL_ENV] = "true"
    try:
        return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    except ImportError as exc:  # SQLAlchemy imports the URI's driver when MLflow opens the store
        if db is not None or tracking_uri.startswith(("http://", "https://")):
            raise  # no driver involved: a broken installation, not bad input
        from pipelines.errors import UserError

        raise UserError(f"the tracking URI {redact_uri(tracking_uri)} needs the database driver "
                        f"'{exc.name or exc}', which is not installed: install it (e.g. psycopg[binary] "
                        "for postgresql://, mysqlclient for mysql://) or use another --tracking-uri") from None


def get_or_create_experiment(client, name: str, tracking_uri: str) -> str:
    """The id of experiment ``name``, created (with :func:`artifact_location_for`) if missing. A
    concurrent creation by another process is tolerated."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location_for(tracking_uri))
    except MlflowException:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _param_value(value: Any) -> str:
    """``value`` as an MLflow param or tag value: text, credentials redacted (a URI or an exception
    message may carry them), cut to MLflow's length limit."""
    text = redact_text(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


#: Seconds between two samples of MLflow's system metrics.
SYSTEM_METRICS_S = 10


class RunTracker:
    """One MLflow run, as a context manager.

    ``RunTracker(uri, experiment, run_name=None, parent_run_id=None, run_id=None)`` starts a new run in
    ``experiment`` (created if missing) or, with ``run_id``, resumes that run (status back to RUNNING).
    ``parent_run_id`` makes it a child run (``mlflow.parentRunId``), as for Tune trials.
    ``system_metrics``: record MLflow's system metrics (CPU, memory, disk, network; GPUs where
    ``pynvml`` is installed) of this machine every ``SYSTEM_METRICS_S`` seconds while the run is open.

    Leaving the ``with`` block normally ends the run FINISHED; an exception ends it FAILED with the
    exception text as the reason (tag :data:`FAILURE_TAG`), KeyboardInterrupt ends it KILLED. The run
    can also be ended early with :meth:`fail` or :meth:`finish`. The tracker may be used without
    ``with``: call :meth:`start` and then :meth:`finish` / :meth:`fail`.
    """

    def __init__(self, tracking_uri: str, experiment: str, run_name: str | None = None,
                 parent_run_id: str | None = None, run_id: str | None = None,
                 tags: dict[str, str] | None = None, system_metrics: bool = False):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.parent_run_id = parent_run_id
        self.run_id: str | None = run_id
        self.experiment_id: str | None = None
        self._tags = dict(tags or {})
        self._resume = run_id is not None
        self._ended = False
        self.system_metrics, self._monitor = system_metrics, None
        self.client = make_client(tracking_uri)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "RunTracker":
        """Create (or resume) the run; returns self. Called by ``__enter__``."""
        if self._resume:
            run = self.client.get_run(self.run_id)
            self.experiment_id = run.info.experiment_id
            self.client.update_run(self.run_id, status="RUNNING")
            self.client.set_tag(self.run_id, "igan.resumed", "true")
        else:
            self.experiment_id = get_or_create_experiment(self.client, self.experiment, self.tracking_uri)
            tags = {"igan.experiment": self.experiment, **{k: _param_value(v) for k, v in self._tags.items()}}
            if self.parent_run_id:
                tags["mlflow.parentRunId"] = self.parent_run_id
            run = self.client.create_run(self.experiment_id, run_name=self.run_name, tags=tags)
            self.run_id = run.info.run_id
            self.run_name = run.info.run_name
        self._ended = False
        if self.system_metrics:
            self._start_monitor()
        return self

    def _start_monitor(self) -> None:
        """MLflow's system-metrics sampler for this run (a daemon thread); skipped, with nothing
        lost but those metrics, where its dependencies are missing."""
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(self.run_id, sampling_interval=SYSTEM_METRICS_S,
                                                 resume_logging=self._resume, tracking_uri=self.tracking_uri)
            self._monitor.start()
        except ImportError:
            self._monitor = None

    def __enter__(self) -> "RunTracker":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._ended or self.run_id is None:
            return False
        if exc_type is None:
            self.finish()
        elif issubclass(exc_type, KeyboardInterrupt):
            self._end("KILLED", "interrupted (KeyboardInterrupt)")
        else:
            text = f"{exc_type.__name__}: {exc}" if str(exc) else exc_type.__name__
            self._end("FAILED", text)
        return False

    @property
    def ended(self) -> bool:
        """Whether this tracker has ended its run (FINISHED, FAILED or KILLED)."""
        return self._ended

    def kill(self, reason: str | None = None) -> None:
        """End the run with status KILLED (interrupted; ``reason`` recorded like :meth:`fail`'s)."""
        self._end("KILLED", reason)

    def finish(self) -> None:
        """End the run with status FINISHED."""
        self._end("FINISHED", None)

    def fail(self, reason: str) -> None:
        """End the run with status FAILED and record ``reason`` in the tag ``igan.failure_reason``."""
        self._end("FAILED", reason)

    def _end(self, status: str, reason: str | None) -> None:
        if self._ended:
            return
        self._require_run()
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None
        if reason is not None:
            reason = redact_text(reason)
            reason = reason if len(reason) <= MAX_TAG_LENGTH else reason[: MAX_TAG_LENGTH - 3] + "..."
            self.client.set_tag(self.run_id, FAILURE_TAG, reason)
        self.client.set_terminated(self.run_id, status=status)
        self._ended = True

    def _require_run(self) -> None:
        if self.run_id is None:
            raise RuntimeError("RunTracker used before start() / entering its with-block")

    # -- logging -----------------------------------------------------------------------------
    def log_config(self, cfg: Config) -> None:
        """Params = ``cfg.flat()`` (lists stringified, values cut to MLflow's length limit), logged in
        batches of 100; plus the artifact ``config.yaml`` (:func:`igan.config.dump_yaml`). On a resumed
        run, params already present are left alone (MLflow params are immutable)."""
        from mlflow.entities import Param

        self._require_run()
        flat = {k: _param_value(v) for k, v in cfg.flat().items()}
        if self._resume:
            existing = self.client.get_run(self.run_id).data.params
            flat = {k: v for k, v in flat.items() if k not in existing}
        params = [Param(k, v) for k, v in flat.items()]
        for chunk in _chunks(params, PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=chunk)
        self.log_text(dump_yaml(cfg), "config.yaml")

    def log_params(self, params: dict[str, Any]) -> None:
        """Extra params (stringified), in batches."""
        from mlflow.entities import Param

        self._require_run()
        items = [Param(str(k), _param_value(v)) for k, v in params.items()]
        for chunk in _chunks(items, PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=chunk)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log ``{name: value}`` at ``step`` (the epoch) in one batch. Values that are not numbers
        are skipped; NaN and infinities are logged as they are."""
        from mlflow.entities import Metric

        self._require_run()
        now = int(time.time() * 1000)
        items = []
        for key, value in metrics.items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            items.append(Metric(key=str(key), value=value, timestamp=now, step=int(step)))
        for chunk in _chunks(items, METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=chunk)

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set run tags (values stringified)."""
        from mlflow.entities import RunTag

        self._require_run()
        items = [RunTag(str(k), _param_value(v)[:MAX_TAG_LENGTH]) for k, v in tags.items()]
        for chunk in _chunks(items, PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=chunk)

    def log_image(self, image: np.ndarray, artifact_file: str) -> None:
        """Write ``image`` (``uint8 [H, W, 3]`` or ``[H, W]``) as a PNG artifact at ``artifact_file``
        (a run-relative path such as ``samples/epoch_0010.png``)."""
        from PIL import Image

        self._require_run()
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ValueError(f"log_image expects uint8 pixels, got {image.dtype}")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            Image.fromarray(image).save(path, format="PNG")
            self.log_artifact(path, _parent(artifact_file))

    def log_step_image(self, image: np.ndarray, key: str, step: int) -> None:
        """Log ``image`` (``uint8 [H, W, 3]``) as MLflow's step-indexed image ``key`` at ``step``
        (the MLflow UI shows such images with a step slider)."""
        self._require_run()
        self.client.log_image(self.run_id, np.asarray(image), key=key, step=int(step))

    def log_text(self, text: str, artifact_file: str) -> None:
        """Write ``text`` as the artifact ``artifact_file`` (run-relative path)."""
        self._require_run()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_text(text)
            self.log_artifact(path, _parent(artifact_file))

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Upload a local file (or a whole folder) under the run-relative folder ``artifact_path``."""
        self._require_run()
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    @property
    def artifact_uri(self) -> str:
        """The run's artifact root URI."""
        self._require_run()
        return self.client.get_run(self.run_id).info.artifact_uri


def _parent(artifact_file: str) -> str | None:
    parent = str(Path(artifact_file).parent)
    return None if parent in ("", ".") else parent


def finite_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The entries of ``metrics`` that are finite numbers (handy before logging summaries)."""
    out = {}
    for key, value in metrics.items():
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            out[key] = value
    return out
