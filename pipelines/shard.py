"""The sharding job: a raw data set to WebDataset shards plus a manifest per split, on Ray Data.

Plan (driver): the source's per-sample index of each split is cut into consecutive shards of
``samples_per_shard`` samples, so shard ``i`` always holds the same samples. Work (Ray Data, one
task per shard, spread over the cluster's CPUs): read -> decode -> resize/crop -> encode -> write
``<name>.tmp-<random>`` while hashing it -> rename to ``<split>-NNNNNN.tar`` -> record the shard in
``.progress/<name>.json`` (count, sha256, size, skipped files and a fingerprint of the plan).
Finish (driver): ``manifest.json``, written last.

Rerunning the same command after a crash finds the shards whose progress record matches the plan
and whose file has the recorded sha256, keeps them, deletes leftover temporary files and stale
shards, and redoes only the rest: no duplicates, no half shards. The manifest is removed when work
starts, so a folder with a manifest is always complete.

What it touches. Only its own names in ``DIR/<split>/``: ``<split>-NNNNNN.tar``, their temporary
names ``<split>-NNNNNN.tar.tmp-<pid>-<8 hex>``, ``manifest.json`` (and its temporary names) and
``.progress/``; any other file there (e.g. ILSVRC's per-class ``n*.tar`` archives) is kept. A split
folder that already holds files but no progress records was not started by ``igan shard``: it is
refused unless ``overwrite`` (``--overwrite``) is given. The whole run holds a lock on ``DIR``
(:mod:`pipelines.shard_lock`), so a second run on the same ``--out`` stops at once.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

from igan.data import imaging
from igan.data.manifest import MANIFEST, read_manifest, shard_name, write_manifest
from igan.data.sources import Entry, Source, SourceError, get_source
from igan.data.sources.base import describe_error
from igan.data.storage import Folder, is_uri
from pipelines.errors import UserError
from pipelines.ray_runtime import check_reachable, init_ray
from pipelines.shard_lock import ShardLock

PROGRESS = ".progress"
_TMP = r"\.tmp-\d+-[0-9a-f]+"  # what write_shard and Folder.write_bytes_atomic append
HASH_THREADS = 8  # rereading finished shards to check their hash: I/O-bound on object stores


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
                entries: list[Entry], expected_hw: tuple[int, int] | None, hooks: Sequence[object] = ()) -> dict:
    """Read, decode, resize, encode and write the samples ``entries`` as shard ``index`` of
    ``split`` under ``out/<split>/`` (temporary name, then rename), then record it in
    ``.progress``. Returns ``{name, num_samples, sha256, size, skipped: [{source, reason}], hw}``.
    Unreadable samples are skipped and listed, never raised. Each hook's ``on_sample(split, index,
    position, count)`` runs before each sample is encoded (tests inject a crash there)."""
    folder = out.sub(split)
    name = shard_name(split, index)
    tmp = f"{name}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    skipped, count, hw = [], 0, expected_hw
    with folder.open_write(tmp) as raw:
        hw_stream = _HashingWriter(raw)
        with tarfile.open(fileobj=hw_stream, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
            for i, rec in enumerate(source.read(split, entries)):
                for hook in hooks:
                    hook.on_sample(split, index, i, len(entries))
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


def own_names(split: str) -> tuple[re.Pattern, re.Pattern]:
    """``(shard, temporary)``: the patterns of the names ``igan shard`` writes in a split folder —
    ``<split>-NNNNNN.tar``, and the temporary names of those and of ``manifest.json``."""
    shard = rf"{re.escape(split)}-\d{{6,}}\.tar"
    return re.compile(rf"^{shard}$"), re.compile(rf"^(?:{shard}|{re.escape(MANIFEST)}){_TMP}$")


def _recorded(folder: Folder, name: str, fingerprint: str, files: set[str]) -> dict | None:
    """The progress record of shard ``name`` when the file is there with the recorded size and the
    record matches ``fingerprint`` (the content is checked by :func:`_completed`)."""
    if name not in files:
        return None
    try:
        rec = json.loads(folder.sub(PROGRESS).read_bytes(f"{name}.json"))
        if rec.get("fingerprint") == fingerprint and folder.size(name) == rec.get("size"):
            return rec
    except (OSError, ValueError):
        pass
    return None


def file_sha256(folder: Folder, name: str) -> str:
    """sha256 hex digest of the file ``name`` in ``folder``, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with folder.open_read(name) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _completed(folder: Folder, candidates: dict[int, dict]) -> dict[int, dict]:
    """The records of ``candidates`` (index -> progress record) whose file hashes to the recorded
    sha256: a finished shard is reused for its content, not for its size."""
    def matches(item: tuple[int, dict]) -> bool:
        try:
            return file_sha256(folder, item[1]["name"]) == item[1].get("sha256")
        except OSError:
            return False

    items = sorted(candidates.items())
    with ThreadPoolExecutor(max_workers=HASH_THREADS) as pool:
        ok = list(pool.map(matches, items))
    return {i: rec for (i, rec), good in zip(items, ok) if good}


def check_ours(folder: Folder, split: str, overwrite: bool) -> None:
    """UserError when the split folder holds files but no progress records (``igan shard`` did
    not start it) and ``overwrite`` is false. Its own leftover temporary files do not count."""
    _, tmp = own_names(split)
    present = [f for f in folder.list() if f != PROGRESS and not tmp.match(f)]
    if not present or overwrite:
        return
    if any(n.endswith(".json") for n in folder.sub(PROGRESS).list()):
        return
    shown = ", ".join(present[:3]) + (f" and {len(present) - 3} more" if len(present) > 3 else "")
    raise UserError(f"{folder.url} holds files igan shard did not write ({shown}); pass --overwrite to write "
                    f"the shards there anyway (it replaces only {split}-NNNNNN.tar and manifest.json and keeps "
                    "everything else), or choose an empty --out")


def shard_dataset(dataset: str, out: str, src: str | None = None, split: str | None = None,
                  image_size: int | None = None, samples_per_shard: int | None = None,
                  address: str | None = None, *, crop: str = "center", quality: int = imaging.JPEG_QUALITY,
                  progress: bool = True, log: Callable[[str], None] | None = None,
                  engine: str = "ray", overwrite: bool = False, hooks: Sequence[object] = ()) -> list[dict]:
    """Shard ``dataset`` (``digits mnist cifar10 svhn imagenet``) from the raw files at ``src`` into
    ``out/<split>/<split>-NNNNNN.tar`` + ``out/<split>/manifest.json`` for ``split`` (default: every
    split the source has). ``out`` is a local folder or a URI (``s3://``, ``gs://``, ``file://``).
    ``image_size``: output side in pixels (default 128 for imagenet, native for the others);
    ``samples_per_shard``: default per data set (digits 256, imagenet 1000, others 5000).
    Runs on the Ray cluster at ``address`` (or ``$RAY_ADDRESS``; default: a local Ray, or the one
    already initialised); ``engine="local"`` instead writes the shards one after another in this
    process (no Ray; for small sets such as a first-use ``digits`` cache). ``crop``: ``center``
    or ``squash`` (see :func:`igan.data.imaging.resize_crop`); ``quality``: JPEG quality. ``log``
    receives the progress/summary lines (default: stderr). ``overwrite``: write into split folders
    that hold files ``igan shard`` did not write (they are kept; see the module doc). ``hooks``:
    objects with ``on_sample`` (see :func:`write_shard`), for tests. Returns the manifests written,
    one dict per split (:func:`igan.data.manifest.write_manifest`'s fields).
    Raises UserError for bad input (unknown data set or split, missing/empty/wrong-format source,
    a split folder not started by ``igan shard``, another run writing to ``out``)."""
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
        check_reachable(address)
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

    with ShardLock(root):
        for s in plans:  # every split before any is touched
            check_ours(root.sub(s), s, overwrite)
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
                                  expected_hw, hooks)
                done[(row["split"], row["index"])] = res
        elif rows:
            ray = init_ray(address)
            cpus = float(ray.cluster_resources().get("CPU", 0))
            results = _run_ray(ray, rows, source, params, root, expected_hw, progress, hooks)
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
    chunks = {i // per_shard: entries[i:i + per_shard] for i in range(0, len(entries), per_shard)}
    names = {shard_name(split, index) for index in chunks}
    recorded = {index: rec for index, chunk in chunks.items()
                if (rec := _recorded(folder, shard_name(split, index), plan_fingerprint(params, split, chunk),
                                     files)) is not None}
    done = _completed(folder, recorded)
    kept = {(split, index): rec for index, rec in done.items()}
    rows = [{"split": split, "index": index, "plan": pickle.dumps(chunk)}
            for index, chunk in chunks.items() if index not in done]
    _clean(folder, split, names, files, all_done=not rows)
    return rows, kept


def _manifest(dataset: str, split: str, classes: list[str], channels: int, recs: list[dict],
              expected_hw) -> dict:
    """The manifest dict (the fields :func:`igan.data.manifest.write_manifest` checks) of a split from its shards' results, in shard order."""
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


def _clean(folder: Folder, split: str, names: set[str], files: set[str], all_done: bool) -> None:
    """Delete leftovers of earlier runs, only under names ``igan shard`` writes: its temporary
    files, its shards outside the plan (and their progress records) and, when work remains, the
    manifest (a folder with a manifest is complete). Every other file is left alone."""
    shard, tmp = own_names(split)
    for f in files:
        if tmp.match(f) or (shard.match(f) and f not in names):
            folder.remove(f)
            folder.sub(PROGRESS).remove(f"{f}.json")
    progress = folder.sub(PROGRESS)
    for f in progress.list():  # the records' own temporary files
        if re.match(rf"^{re.escape(split)}-\d{{6,}}\.tar\.json{_TMP}$", f):
            progress.remove(f)
    if not all_done and MANIFEST in files:
        folder.remove(MANIFEST)


def _run_ray(ray, rows: list[dict], source: Source, params: ShardParams, root: Folder,
             expected_hw, progress: bool, hooks: Sequence[object]) -> list[dict]:
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
        res = write_shard(source, params, root, row["split"], index, entries, expected_hw, hooks)
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
