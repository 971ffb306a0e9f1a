"""Read what a report shows of one MLflow run into plain data (:class:`RunData`): its info, params,
every metric's history and its sample grids, whichever way they were logged.

Sample grids come two ways. Older runs wrote plain artifacts ``samples/epoch_NNNN.png``. MLflow 3's
``MlflowClient.log_image(run_id, image, key=K, step=S)`` writes two files per call under
``images/``: ``K+step+S+timestamp+MS+UUID.png`` (the image as logged) and
``K+step+S+timestamp+MS+UUID+compressed.webp`` (a preview for its UI), with ``/`` in the key
written as ``~``. MLflow 2 spelled the same names with ``%`` between the fields and ``#`` for ``/``;
both spellings are read.
"""
from __future__ import annotations

import io
import math
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.errors import UserError

#: Images larger than this are shown from MLflow's compressed preview when it is smaller.
MAX_INLINE_IMAGE_BYTES = 512 * 1024
#: Sample grids per run and key shown by default (spread evenly from first to last).
DEFAULT_MAX_IMAGES = 12
#: Folder of step-indexed images logged with ``log_image(..., key=..., step=...)``.
IMAGES_FOLDER = "images"
#: Folder of the older per-epoch sample grids.
SAMPLES_FOLDER = "samples"
#: The key old-style epoch grids are shown under (the key new runs log them with).
SAMPLES_KEY = "samples"
MIME = {"png": "image/png", "webp": "image/webp", "jpg": "image/jpeg", "jpeg": "image/jpeg"}
#: Codes MLflow answers with for a run id that names no run (sqlite stores and servers differ).
NO_SUCH_RUN_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")

_STEP_IMAGE = re.compile(
    r"^(?P<key>.+?)(?P<sep>[+%])step(?P=sep)(?P<step>-?\d+)(?P=sep)timestamp(?P=sep)(?P<timestamp>\d+)"
    r"(?P=sep)(?P<uuid>[0-9A-Fa-f-]+)(?P<compressed>(?P=sep)compressed)?\.(?P<ext>png|webp|jpe?g)$")
_EPOCH_SAMPLE = re.compile(r"^epoch_(?P<epoch>\d+)\.(?P<ext>png|webp|jpe?g)$")
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class ImageName:
    """What the file name of a step-indexed MLflow image says about it."""
    key: str
    step: int
    timestamp: int
    uuid: str
    compressed: bool
    ext: str


def parse_image_name(path: str) -> ImageName | None:
    """The :class:`ImageName` of an artifact written by ``log_image(key=..., step=...)`` (MLflow 3's
    ``+`` or MLflow 2's ``%`` spelling; the folder part of ``path`` is ignored), else None."""
    m = _STEP_IMAGE.match(Path(path).name)
    if m is None:
        return None
    key = m["key"].replace("~", "/") if m["sep"] == "+" else m["key"].replace("#", "/")
    return ImageName(key, int(m["step"]), int(m["timestamp"]), m["uuid"].lower(), bool(m["compressed"]),
                     m["ext"].lower())


def parse_epoch_sample(path: str) -> int | None:
    """The epoch of an old-style sample grid ``samples/epoch_NNNN.png``, else None."""
    m = _EPOCH_SAMPLE.match(Path(path).name)
    return int(m["epoch"]) if m else None


@dataclass
class SampleImage:
    """One sample grid ready to inline: its key, step, the artifact it came from and its bytes."""
    key: str
    step: int
    path: str
    mime: str
    data: bytes
    width: int
    height: int


@dataclass
class Target:
    """A run to report on, with the URI the user named it by and, for a model URI, the model version
    it resolved to."""
    uri: str
    run_id: str
    model_name: str | None = None
    model_version: str | None = None


@dataclass
class RunData:
    """Everything a report shows of one run, as plain values: ``histories`` maps each metric to its
    ``(step, value)`` points (one per step, step order), ``images`` the sample grids chosen (step
    order), ``image_counts`` how many each key had in all."""
    target: Target
    name: str
    status: str
    experiment: str
    start_ms: int | None
    end_ms: int | None
    params: dict[str, str]
    histories: dict[str, list[tuple[int, float]]]
    images: list[SampleImage] = field(default_factory=list)
    image_counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.target.run_id


# -- which run --------------------------------------------------------------------------------------

def resolve_target(client, uri: str, tracking_uri: str) -> Target:
    """The :class:`Target` named by ``uri``: a run id, ``runs:/RUN_ID[/PATH]``, ``models:/NAME@ALIAS``
    or ``models:/NAME/VERSION``. UserError (one line) for a malformed URI, a model that does not
    resolve or a run the store does not have."""
    if uri.startswith("models:/"):
        from pipelines.registry import resolve_model_uri  # loads torch: only for model URIs

        name, version, run_id = resolve_model_uri(uri, tracking_uri)
        _check_run(client, run_id, tracking_uri)
        return Target(uri, run_id, name, version)
    run_id = uri[len("runs:/"):].split("/", 1)[0] if uri.startswith("runs:/") else uri
    if not _RUN_ID.match(run_id):
        raise UserError(f"cannot read '{uri}' as a run or model; expected RUN_ID, runs:/RUN_ID, "
                        "models:/NAME@ALIAS or models:/NAME/VERSION")
    _check_run(client, run_id, tracking_uri)
    return Target(uri, run_id)


def _check_run(client, run_id: str, tracking_uri: str) -> None:
    from mlflow.exceptions import MlflowException

    from pipelines.defaults import redact_uri

    try:
        client.get_run(run_id)
    except MlflowException as exc:
        if str(getattr(exc, "error_code", "")) in NO_SUCH_RUN_CODES:
            raise UserError(f"no MLflow run '{run_id}' in {redact_uri(tracking_uri)}") from None
        raise


# -- what it logged ---------------------------------------------------------------------------------

def metric_value(value: float) -> float:
    """A logged metric value as it was logged: MLflow stores an infinity as the largest finite
    float, which is turned back into one (so it is left out of charts, not drawn as 1.8e308)."""
    value = float(value)
    return math.copysign(math.inf, value) if abs(value) >= sys.float_info.max else value


def history_points(metrics) -> list[tuple[int, float]]:
    """``(step, value)`` per step of MLflow ``Metric`` records, step order, values by
    :func:`metric_value`; where a step was logged more than once (a resumed run) the latest
    timestamp wins."""
    latest: dict[int, tuple[int, float]] = {}
    for m in metrics:
        step, stamp = int(m.step), int(m.timestamp or 0)
        if step not in latest or stamp >= latest[step][0]:
            latest[step] = (stamp, metric_value(m.value))
    return [(step, value) for step, (_, value) in sorted(latest.items())]


def spread(items: list, n: int) -> list:
    """At most ``n`` of ``items`` evenly spread, the first and the last always among them."""
    if n <= 0:
        return []
    if len(items) <= n:
        return list(items)
    if n == 1:
        return [items[-1]]
    picks = sorted({round(i * (len(items) - 1) / (n - 1)) for i in range(n)})
    return [items[i] for i in picks]


def _files_in(client, run_id: str, folder: str) -> list:
    """FileInfos of the files directly in ``folder`` of a run (both layouts are flat), [] when it
    has no such folder."""
    return [info for info in client.list_artifacts(run_id, folder) if not info.is_dir]


def sample_files(client, run_id: str) -> dict[tuple[str, int], str]:
    """``{(key, step): artifact path}`` of a run's sample grids: step-indexed images (the full image,
    or MLflow's compressed preview when the full one is over :data:`MAX_INLINE_IMAGE_BYTES` and the
    preview is smaller) and old-style ``samples/epoch_NNNN.png`` under the key ``samples``. A step
    logged more than once shows its latest image."""
    chosen: dict[tuple[str, int], tuple[int, str]] = {}
    previews: dict[str, tuple[str, int]] = {}
    full: list[tuple[ImageName, str, int]] = []
    for info in _files_in(client, run_id, IMAGES_FOLDER):
        name = parse_image_name(info.path)
        if name is None:
            continue
        if name.compressed:
            previews[name.uuid] = (info.path, int(info.file_size or 0))
        else:
            full.append((name, info.path, int(info.file_size or 0)))
    for name, path, size in full:
        preview = previews.get(name.uuid)
        if size > MAX_INLINE_IMAGE_BYTES and preview is not None and preview[1] < size:
            path = preview[0]
        key = (name.key, name.step)
        if key not in chosen or name.timestamp >= chosen[key][0]:
            chosen[key] = (name.timestamp, path)
    for info in _files_in(client, run_id, SAMPLES_FOLDER):
        epoch = parse_epoch_sample(info.path)
        if epoch is not None and (SAMPLES_KEY, epoch) not in chosen:  # a step-indexed one wins
            chosen[(SAMPLES_KEY, epoch)] = (-1, info.path)
    return {key: path for key, (_, path) in sorted(chosen.items())}


def _read_image(client, run_id: str, path: str, folder: str) -> tuple[bytes, int, int]:
    from PIL import Image

    local = Path(client.download_artifacts(run_id, path, folder))
    data = local.read_bytes()
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
    return data, width, height


def collect_images(client, run_id: str, max_images: int = DEFAULT_MAX_IMAGES) -> tuple[list[SampleImage],
                                                                                         dict[str, int], list[str]]:
    """``(images, counts, notes)``: up to ``max_images`` sample grids per key read from the run
    (:func:`sample_files`, spread over its steps, step order), how many each key has in all, and a
    note for each file that could not be read."""
    files = sample_files(client, run_id)
    by_key: dict[str, list[tuple[int, str]]] = {}
    for (key, step), path in files.items():
        by_key.setdefault(key, []).append((step, path))
    images, notes = [], []
    with tempfile.TemporaryDirectory(prefix="igan-report-") as tmp:
        for key, entries in sorted(by_key.items()):
            for step, path in spread(entries, max_images):
                try:
                    data, width, height = _read_image(client, run_id, path, tmp)
                except Exception as exc:  # noqa: BLE001 - one unreadable image must not lose the page
                    notes.append(f"image {path} could not be read ({type(exc).__name__})")
                    continue
                ext = path.rsplit(".", 1)[-1].lower()
                images.append(SampleImage(key, step, path, MIME.get(ext, "image/png"), data, width, height))
    return images, {key: len(entries) for key, entries in by_key.items()}, notes


def collect_run(client, target: Target, max_images: int = DEFAULT_MAX_IMAGES) -> RunData:
    """The :class:`RunData` of ``target``'s run: info, params, the history of every metric it
    logged, and its sample grids (:func:`collect_images`)."""
    run = client.get_run(target.run_id)
    info, data = run.info, run.data
    try:
        experiment = client.get_experiment(info.experiment_id).name
    except Exception:  # noqa: BLE001 - the name is decoration; the id still says where it is
        experiment = str(info.experiment_id)
    histories = {key: history_points(client.get_metric_history(target.run_id, key))
                 for key in sorted(data.metrics)}
    images, counts, notes = collect_images(client, target.run_id, max_images)
    return RunData(target=target, name=info.run_name or target.run_id, status=str(info.status),
                   experiment=experiment, start_ms=info.start_time, end_ms=info.end_time,
                   params=dict(data.params), histories=histories, images=images, image_counts=counts,
                   notes=notes)
