"""The sharding job: a raw data set to WebDataset shards plus a manifest per split, on Ray Data.

Plan (driver): the source's per-sample index of each split is cut into consecutive shards of
``samples_per_shard`` samples, so shard ``i`` always holds the same samples. Work (Ray Data, one
task per shard, spread over the cluster's CPUs): read -> decode -> resize/crop -> encode -> write
``<name>.tmp-<random>`` while hashing it -> rename to ``<split>-NNNNNN.tar`` -> record the shard in
``.progress/<name>.json`` (count, sha256, size, skipped files and a fingerprint of the plan).
Finish (driver): ``manifest.json``, written last.

Rerunning the same command after a crash finds the shards whose progress record matches the plan
and whose file has the recorded size, keeps them, deletes leftover temporary files and stale
shards, and redoes only the rest: no duplicates, no half shards. The manifest is removed when work
starts, so a folder with a manifest is always complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
import tarfile
import time
from dataclasses import dataclass
from typing import Callable

from igan.data import imaging
from igan.data.manifest import MANIFEST, read_manifest, shard_name, write_manifest
from igan.data.sources import Entry, Source, SourceError, get_source
from igan.data.sources.base import describe_error
from igan.data.storage import Folder, is_uri
from pipelines.errors import UserError

PROGRESS = ".progress"


@dataclass(frozen=True)
class ShardParams:
    """What every shard of a job is encoded with (part of each shard's fingerprint)."""
    dataset: str
    fmt: str               # "png" or "jpg"
    channels: int          # 1 or 3
    size: int | None       # output side in pixels; None keeps the native size
    crop: str = "center"
    quality: int = imaging.JPEG_QUALITY


def plan_fingerprint(params: ShardParams, split: str, entries: list[Entry]) -> str:
    """sha256 hex digest identifying one shard's content plan (params + keys, labels, locations)."""
    h = hashlib.sha256(json.dumps([params.__dict__, split]).encode())
    for e in entries:
        h.update(f"\n{e.key}\t{e.label}\t{e.loc}".encode())
    return h.hexdigest()


class _HashingWriter:
    """A write-only stream that forwards to ``raw`` and hashes (sha256) and counts what passes."""

    def __init__(self, raw):
        self.raw, self.sha, self.size = raw, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.raw.write(data)
        return len(data)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o444, "", ""
    tar.addfile(info, io.BytesIO(data))


def encode_record(rec, params: ShardParams) -> tuple[bytes, tuple[int, int]]:
    """Encoded image bytes and ``(H, W)`` of one source record; raises on unreadable data."""
    if rec.error is not None:
        raise ValueError(rec.error)
    if rec.pixels is not None:
        return imaging.process_array(rec.pixels, size=params.size, fmt=params.fmt, crop=params.crop,
                                     quality=params.quality)
    return imaging.process_bytes(rec.data, size=params.size, channels=params.channels, fmt=params.fmt,
                                 crop=params.crop, quality=params.quality)


def write_shard(source: Source, params: ShardParams, out: Folder, split: str, index: int,
                entries: list[Entry], expected_hw: tuple[int, int] | None, crash: bool = False) -> dict:
    """Read, decode, resize, encode and write the samples ``entries`` as shard ``index`` of
    ``split`` under ``out/<split>/`` (temporary name, then rename), then record it in
    ``.progress``. Returns ``{name, num_samples, sha256, size, skipped: [{source, reason}], hw}``.
    Unreadable samples are skipped and listed, never raised. ``crash`` (tests) stops halfway."""
    folder = out.sub(split)
    name = shard_name(split, index)
    tmp = f"{name}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    skipped, count, hw = [], 0, expected_hw
    with folder.open_write(tmp) as raw:
        hw_stream = _HashingWriter(raw)
        with tarfile.open(fileobj=hw_stream, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
            for i, rec in enumerate(source.read(split, entries)):
                if crash and i >= len(entries) // 2:
                    raise RuntimeError(f"simulated crash while writing {name}")
                try:
                    data, shape = encode_record(rec, params)
                except Exception as exc:  # one bad file never stops the job
                    skipped.append({"source": rec.source, "reason": rec.error or describe_error(exc)})
                    continue
                if hw is None:
                    hw = shape
                elif shape != tuple(hw):
                    skipped.append({"source": rec.source, "reason": f"size {shape[0]}x{shape[1]}, expected "
                                                                   f"{hw[0]}x{hw[1]} (pass --image-size)"})
                    continue
                _add(tar, f"{rec.key}.{params.fmt}", data)
                _add(tar, f"{rec.key}.cls", str(int(rec.label)).encode())
                count += 1
    result = {"name": name, "num_samples": count, "sha256": hw_stream.sha.hexdigest(), "size": hw_stream.size,
              "skipped": skipped, "hw": list(hw) if hw else None,
              "fingerprint": plan_fingerprint(params, split, entries)}
    folder.rename(tmp, name)
    folder.sub(PROGRESS).makedirs()
    folder.sub(PROGRESS).write_bytes_atomic(f"{name}.json", json.dumps(result).encode())
    return result


def _completed(folder: Folder, name: str, fingerprint: str, files: set[str]) -> dict | None:
    """The progress record of shard ``name`` when it is complete and matches ``fingerprint``."""
    if name not in files:
        return None
    try:
        rec = json.loads(folder.sub(PROGRESS).read_bytes(f"{name}.json"))
        if rec.get("fingerprint") == fingerprint and folder.size(name) == rec.get("size"):
            return rec
    except (OSError, ValueError):
        pass
    return None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """UserError when ``address`` (``host:port`` or ``ray://host:port``) refuses TCP connections;
    Ray itself would retry for minutes without a word. ``auto`` and other forms are not checked."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc})") from None


def _init_ray(address: str | None):
    """The ``ray`` module, initialised: the session already running, else the cluster at
    ``address``/``$RAY_ADDRESS`` (Ray Client ``ray://`` addresses get this checkout's code shipped
    to the workers), else a new local Ray using every CPU."""
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        ray.init(include_dashboard=False, log_to_driver=False)
        return ray
    _check_reachable(address)
    init: dict = {"address": address, "log_to_driver": False}
    if address.startswith("ray://"):
        import igan
        import pipelines

        init["runtime_env"] = {"py_modules": [os.path.dirname(igan.__file__), os.path.dirname(pipelines.__file__)]}
    try:
        ray.init(**init)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot connect to the Ray cluster at {address}: {reason}") from None
    return ray


def shard_dataset(dataset: str, out: str, src: str | None = None, split: str | None = None,
                  image_size: int | None = None, samples_per_shard: int | None = None,
                  address: str | None = None, *, crop: str = "center", quality: int = imaging.JPEG_QUALITY,
                  progress: bool = True, log: Callable[[str], None] | None = None,
                  engine: str = "ray", _crash_at_shard: int | None = None) -> list[dict]:
    """Shard ``dataset`` (``digits mnist cifar10 svhn imagenet``) from the raw files at ``src`` into
    ``out/<split>/<split>-NNNNNN.tar`` + ``out/<split>/manifest.json`` for ``split`` (default: every
    split the source has). ``out`` is a local folder or a URI (``s3://``, ``gs://``, ``file://``).
    ``image_size``: output side in pixels (default 128 for imagenet, native for the others);
    ``samples_per_shard``: default per data set (digits 256, imagenet 1000, others 5000).
    Runs on the Ray cluster at ``address`` (or ``$RAY_ADDRESS``; default: a local Ray, or the one
    already initialised); ``engine="local"`` instead writes the shards one after another in this
    process (no Ray; for small sets such as a first-use ``digits`` cache). ``crop``: ``center``
    or ``squash`` (see :func:`igan.data.imaging.resize_crop`); ``quality``: JPEG quality. ``log``
    receives the progress/summary lines (default: stderr). Returns the manifests written, one
    dict per split (DESIGN.md fields).
    Raises UserError for bad input (unknown data set or split, missing/empty/wrong-format source)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    try:
        source = get_source(dataset, src)
    except SourceError as exc:
        raise UserError(str(exc)) from None
    if image_size is not None and not 1 <= int(image_size) <= 4096:
        raise UserError(f"--image-size must be in 1..4096, got {image_size}")
    if samples_per_shard is not None and int(samples_per_shard) < 1:
        raise UserError(f"--samples-per-shard must be >= 1, got {samples_per_shard}")
    if address and engine == "ray":
        _check_reachable(address)
    if engine not in ("ray", "local"):
        raise UserError(f"engine must be ray or local; got {engine!r}")
    if crop not in imaging.CROPS:
        raise UserError(f"crop must be one of {', '.join(imaging.CROPS)}; got {crop!r}")
    size = image_size if image_size is not None else source.default_image_size
    per_shard = int(samples_per_shard or source.samples_per_shard)
    params = ShardParams(dataset, source.fmt, source.channels, size, crop, quality)
    root = Folder(out)
    if not is_uri(root.url) and os.path.exists(root.url) and not os.path.isdir(root.url):
        raise UserError(f"--out {out} exists and is not a folder")

    try:
        splits = [split] if split else source.splits()
        if split:
            source.check_split(split)
        classes = source.classes()
        plans = {s: source.entries(s) for s in splits}
    except SourceError as exc:
        raise UserError(str(exc)) from None
    for s, entries in plans.items():
        if not entries:
            raise UserError(f"{dataset} split '{s}' in {src} has no images (empty source)")
        bad = next((e for e in entries if not 0 <= e.label < len(classes)), None)
        if bad is not None:
            raise UserError(f"{dataset} split '{s}': label {bad.label} of {bad.key} is outside 0..{len(classes) - 1}")

    expected_hw = (size, size) if size else ((source.native_size,) * 2 if source.native_size else None)
    rows, done = [], {}
    for s, entries in plans.items():
        todo, kept = _plan_split(root.sub(s), s, entries, per_shard, params)
        rows += todo
        done.update(kept)
        log(f"igan shard: {dataset}/{s}: {len(entries)} samples -> {-(-len(entries) // per_shard)} shards of "
            f"<= {per_shard} in {root.sub(s).url} ({len(kept)} already complete)")

    t0, cpus = time.perf_counter(), 0.0
    if rows and engine == "local":
        cpus = 1.0
        for row in rows:
            res = write_shard(source, params, root, row["split"], row["index"], pickle.loads(row["plan"]),
                              expected_hw, crash=_crash_at_shard is not None and row["index"] >= _crash_at_shard)
            done[(row["split"], row["index"])] = res
    elif rows:
        ray = _init_ray(address)
        cpus = float(ray.cluster_resources().get("CPU", 0))
        results = _run_ray(ray, rows, source, params, root, expected_hw, progress, _crash_at_shard)
        for r in results:
            done[(r["split"], r["index"])] = r
    elapsed = time.perf_counter() - t0

    manifests = []
    for s, entries in plans.items():
        recs = [done[(s, i)] for i in range(-(-len(entries) // per_shard))]
        manifest = _manifest(dataset, s, classes, source.channels, recs, expected_hw)
        if manifest["num_samples"] == 0:
            raise UserError(f"{dataset} split '{s}': none of the {len(entries)} images could be read "
                            f"(first reason: {manifest['skipped'][0]['reason'] if manifest['skipped'] else '?'})")
        if _existing_manifest(root.sub(s)) != manifest:  # an identical one is left untouched
            write_manifest(root.sub(s), manifest)
        manifests.append(manifest)
    total = sum(m["num_samples"] for m in manifests)
    redone = sum(len(pickle.loads(r["plan"])) for r in rows)
    rate = f", {redone / elapsed:.0f} img/s on {cpus:g} CPUs" if rows and elapsed > 0 else ""
    log(f"igan shard: done: {dataset} " + ", ".join(
        f"{m['split']} {m['num_samples']} samples in {len(m['shards'])} shards ({len(m['skipped'])} skipped)"
        for m in manifests) + f" -> {root.url} [{total} samples, {redone} encoded in {elapsed:.1f}s{rate}]")
    return manifests


def _plan_split(folder: Folder, split: str, entries: list[Entry], per_shard: int,
                params: ShardParams) -> tuple[list[dict], dict]:
    """Cut ``entries`` into shards and sort them into work rows ``{split, index, plan}`` and
    already-complete shards ``{(split, index): progress record}``; cleans the split folder."""
    folder.makedirs()
    files = set(folder.list())
    rows, kept, names = [], {}, set()
    for i in range(0, len(entries), per_shard):
        index, chunk = i // per_shard, entries[i:i + per_shard]
        names.add(shard_name(split, index))
        rec = _completed(folder, shard_name(split, index), plan_fingerprint(params, split, chunk), files)
        if rec is not None:
            kept[(split, index)] = rec
        else:
            rows.append({"split": split, "index": index, "plan": pickle.dumps(chunk)})
    _clean(folder, names, files, all_done=not rows)
    return rows, kept


def _manifest(dataset: str, split: str, classes: list[str], channels: int, recs: list[dict],
              expected_hw) -> dict:
    """The manifest dict (DESIGN.md fields) of a split from its shards' results, in shard order."""
    hw = next((r["hw"] for r in recs if r.get("hw")), None) or list(expected_hw or (0, 0))
    return {
        "dataset": dataset, "split": split, "num_samples": sum(r["num_samples"] for r in recs),
        "num_classes": len(classes), "classes": classes, "image_size": [int(hw[0]), int(hw[1])],
        "channels": channels,
        "shards": [{"name": r["name"], "num_samples": r["num_samples"], "sha256": r["sha256"]} for r in recs],
        "skipped": [sk for r in recs for sk in r["skipped"]],
    }


def _existing_manifest(folder: Folder) -> dict | None:
    try:
        return read_manifest(folder)
    except ValueError:
        return None


def _clean(folder: Folder, names: set[str], files: set[str], all_done: bool) -> None:
    """Delete leftovers of earlier runs: temporary files, shards outside the plan and, when work
    remains, the manifest (a folder with a manifest is complete)."""
    for f in files:
        if ".tmp-" in f or (f.endswith(".tar") and f not in names):
            folder.remove(f)
            folder.sub(PROGRESS).remove(f"{f}.json")
    if not all_done and MANIFEST in files:
        folder.remove(MANIFEST)


def _run_ray(ray, rows: list[dict], source: Source, params: ShardParams, root: Folder,
             expected_hw, progress: bool, crash_at: int | None) -> list[dict]:
    """Run :func:`write_shard` for every row as Ray Data tasks (one block per shard); returns the
    results with ``split`` and ``index`` added."""
    ctx = ray.data.DataContext.get_current()
    saved = {k: getattr(ctx, k) for k in ("enable_progress_bars", "enable_operator_progress_bars",
                                          "op_resource_reservation_enabled")}
    ctx.enable_progress_bars = ctx.enable_operator_progress_bars = progress
    # One map operator and a driver that only collects small result rows: Ray Data's per-operator
    # reservation would hold back half the CPUs (on 2 CPUs, one task at a time); let the map use all.
    ctx.op_resource_reservation_enabled = False

    def read_decode_resize_encode_write(row: dict) -> dict:  # the name labels Ray Data's progress bar
        entries = pickle.loads(row["plan"])
        index = int(row["index"])
        res = write_shard(source, params, root, row["split"], index, entries, expected_hw,
                          crash=crash_at is not None and index >= crash_at)
        return {"split": row["split"], "index": index, "result": json.dumps(res)}

    try:
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        ds = ds.map(read_decode_resize_encode_write, num_cpus=1)
        out = []
        for row in ds.iter_rows():
            res = json.loads(row["result"])
            res.update(split=row["split"], index=int(row["index"]))
            out.append(res)
    finally:
        for k, v in saved.items():
            setattr(ctx, k, v)
    return out
