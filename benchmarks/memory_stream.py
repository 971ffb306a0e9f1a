"""Claim: a fully labeled ``imagenet128`` worker's memory does not grow with the train split: on a
50,000-image split each worker's peak RSS is at most 1.1x its peak on a 5,000-image split.

Builds two synthetic ImageNet-like shard roots (``--sizes``; 128x128 JPEG q95, ``--classes``
classes, ``--samples-per-shard`` 1,000) by writing an ILSVRC-shaped ``train/<wnid>/*.JPEG`` tree and
sharding it with ``igan shard``'s local engine; the roots are cached under ``--work`` (default: a
folder in the system temp dir), so a rerun reuses them. Then, per size, ``--workers`` fresh
processes (rank r of ``--workers``) each do what a Ray Train worker of ``igan train`` does before
and during its first epoch, without Ray and without DDP (the ranks share nothing, so a worker's
memory is the same alone or side by side): ``make_feed`` on the streaming path, ``feed.init_batch()``,
a CPU ``Trainer`` with tiny widths, ``--steps`` training steps of ``feed.epoch(0)``. No evaluation.

Two variants per size, in the same run:

- ``stream`` (igan today): :class:`igan.data.feed.StreamFeed`, labels streamed with the images and
  the validation hold-out carved in one bounded pass;
- ``whole_split`` (the baseline, igan before the stream carve): the same worker also materialising
  the whole train split as the former ``StreamFeed`` did for ``labels_per_class=-1``
  (``labeled_subset(root, "train", -1)`` -> ``read_split``: float32 images in model range), held for
  the run.

Peak RSS is the process's ``VmHWM`` (``/proc/self/status``), not ``ru_maxrss``: a spawned child's
``ru_maxrss`` starts at its parent's RSS at fork time (Linux carries the forked image's high-water
mark across ``exec``), while ``VmHWM`` belongs to the child's own address space.

The baseline needs, on top of the streaming worker, the encoded split, its uint8 decode and, for a
moment, three float32 copies (``to_model_range``: ``x.float()``, ``x / 127.5`` and ``- 1.0``):
~3 GiB for 5,000 images, ~30 GiB for 50,000. Ranks therefore run one after another unless
``--parallel``; a baseline size whose projected peak exceeds 80% of ``MemAvailable`` is not run and
its peak is projected instead (the streaming worker's peak at that size plus the baseline's measured
excess per image at a size that ran); every worker is stopped at 80% of ``MemAvailable`` and makes
itself the OOM killer's first choice, so a shared machine's other jobs are never the victims.

Prints one JSON line: per variant, size and rank the RSS after start-up, after the feed is built
(and the peak until then), after the steps, and the peak (MiB); per variant the ratio of the larger size's worst worker peak to
the smaller size's (``whole_split_projected_ratio`` where the baseline's large size was projected);
target 1.1 for ``stream``.

    .venv/bin/python benchmarks/memory_stream.py [--sizes 5000,50000] [--steps 20] \\
        [--workers 2] [--classes 100] [--batch-size 16] [--work DIR] [--parallel] [--variants stream,whole_split]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VARIANTS = ("stream", "whole_split")
TARGET_RATIO = 1.1
MIB = 1024 * 1024
# D 128 -> 4 over five strided convs and a mirrored G: the DCGAN pair the preset had when this was
# measured, at ~1/16 width, so the model's own memory (a few MiB) does not hide the data path's.
TINY = ["model.name=imagenet_dcgan", "model.z_dim=100", "model.g_noise_channels=[]", "techniques.vbn_reference_size=64",
        "model.d_widths=[8,16,32,32,64]", "model.g_widths=[64,32,32,16,8]"]


# -- synthetic ImageNet-like shards -------------------------------------------------------------
def wnid(label: int) -> str:
    """The synthetic ILSVRC folder name (``nXXXXXXXX``) of class ``label``."""
    return f"n{1000000 + label:08d}"


def synthetic_image(index: int, label: int, size: int = 128) -> np.ndarray:
    """Image ``index`` of class ``label``: ``uint8 [size, size, 3]``, a class tint over a smooth
    random 8x8 pattern plus mild noise (~6.6 KB as 128x128 JPEG q95, close to ImageNet's), drawn
    from ``index`` alone so every size's set starts with the same images."""
    from PIL import Image

    rng = np.random.default_rng([index, 17])
    tint = np.array([(label * 37) % 256, (label * 91) % 256, (label * 151) % 256], dtype=np.float32)
    low = rng.integers(0, 256, size=(8, 8, 3)).astype(np.float32) * 0.6 + tint * 0.4
    up = Image.fromarray(low.astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    noisy = np.asarray(up, dtype=np.int16) + rng.integers(-6, 7, size=(size, size, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def write_tree(src: str, n: int, classes: int) -> None:
    """``n`` JPEG q95 files as ``src/train/<wnid>/<wnid>_<i>.JPEG`` (image ``i`` in class ``i mod
    classes``); files already there are kept."""
    from igan.data.imaging import encode

    for i in range(n):
        label = i % classes
        folder = os.path.join(src, "train", wnid(label))
        path = os.path.join(folder, f"{wnid(label)}_{i}.JPEG")
        if os.path.exists(path):
            continue
        os.makedirs(folder, exist_ok=True)
        with open(path + ".tmp", "wb") as f:
            f.write(encode(synthetic_image(i, label), "jpg"))
        os.replace(path + ".tmp", path)  # a killed run never leaves a half file that looks whole


def cached_manifest(root: str) -> dict | None:
    """``root/train/manifest.json`` as a dict, or None when the split is absent or incomplete."""
    path = os.path.join(root, "train", "manifest.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def shard_root(work: str, n: int, classes: int, samples_per_shard: int = 1000) -> str:
    """The path of a shard root holding a synthetic ``train`` split of ``n`` 128x128 JPEGs in
    ``classes`` classes under ``work``: reused when complete, else written (``igan shard``'s local
    engine over a temporary ILSVRC tree, deleted afterwards)."""
    from pipelines.shard import shard_dataset

    root = os.path.join(work, f"imagenet-{n}x{classes}-{samples_per_shard}")
    m = cached_manifest(root)
    if m is not None and m["num_samples"] == n and m["num_classes"] == classes:
        return root
    src = os.path.join(work, f"raw-{n}x{classes}")
    write_tree(src, n, classes)
    shard_dataset("imagenet", root, src=src, split="train", samples_per_shard=samples_per_shard,
                  engine="local", progress=False, log=lambda m: None)
    shutil.rmtree(src, ignore_errors=True)
    return root


# -- one worker ----------------------------------------------------------------------------------
def bench_config(classes: int, batch_size: int, steps: int, extra: list[str] | None = None):
    """The ``imagenet128`` preset with tiny widths, ``classes`` classes, ``batch_size`` per worker
    and an epoch capped at ``steps`` steps (everything else, hold-out and shuffle buffer included,
    as the preset has it)."""
    from igan.config import apply_overrides
    from igan.presets import get_preset

    sets = TINY + [f"data.num_classes={classes}", f"data.batch_size={batch_size}",
                   f"train.steps_per_epoch={steps}", "train.device=cpu", "eval.scorer=none"]
    return apply_overrides(get_preset("imagenet128"), sets + list(extra or []))


def rss_mib() -> tuple[float, float]:
    """``(current RSS, peak RSS)`` of this process in MiB (``VmRSS``, ``VmHWM``; see module doc)."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, kib = line.split()[:2]
                fields[name] = int(kib) / 1024  # the kernel reports kB (KiB)
    return round(fields["VmRSS:"], 1), round(fields["VmHWM:"], 1)


def run_worker(root: str, rank: int, world: int, variant: str, cfg) -> dict:
    """One data-parallel worker's set-up and first ``train.steps_per_epoch`` steps on ``root``, as
    ``pipelines.worker`` does them (no Ray, no DDP). Returns ``{rank, variant, feed, steps,
    startup_mib, feed_built_mib, feed_built_peak_mib, after_steps_mib, peak_mib, whole_split_mib}``:
    RSS in MiB after imports, after the feed (and, for ``whole_split``, the split) is in memory and
    the peak up to then (the carve pass's), after the steps, the process's peak, and the size of the
    materialised split's tensors (0 for ``stream``)."""
    from igan.data.feed import make_feed
    from igan.data.shards import read_split
    from igan.trainer import Trainer

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
    startup, _ = rss_mib()
    feed = make_feed(cfg, root, rank, world, memory_limit=0)  # 0: always the streaming path
    held = ()
    if variant == "whole_split":
        # what the former StreamFeed's labeled_subset(root, "train", -1, ...) returned and kept
        held = read_split(root, "train", cfg.data.pixel_range)
    built, built_peak = rss_mib()
    trainer = Trainer(cfg, init_batch=feed.init_batch(), device="cpu")
    trainer.set_epoch(0)
    steps = 0
    for batch in feed.epoch(0):
        trainer.train_step(*batch)
        steps += 1
    after, peak = rss_mib()
    return {"rank": rank, "variant": variant, "feed": type(feed).__name__, "steps": steps,
            "startup_mib": startup, "feed_built_mib": built, "feed_built_peak_mib": built_peak,
            "after_steps_mib": after, "peak_mib": peak,
            "whole_split_mib": round(sum(t.numel() * t.element_size() for t in held) / MIB, 1)}


RSS_CAP_EXIT = 75  # exit status of a worker stopped by its RSS cap


def start_rss_cap(cap_mib: float, every_s: float = 0.05) -> None:
    """Make this process the OOM killer's first choice and, on a daemon thread, end it (status
    ``RSS_CAP_EXIT``) once its RSS passes ``cap_mib`` MiB: on a shared machine the baseline's
    whole-split copy must not push the kernel into killing a neighbour's processes instead."""
    import threading

    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")  # raising one's own score needs no privilege
    except OSError:
        pass

    def watch() -> None:
        while rss_mib()[0] <= cap_mib:
            time.sleep(every_s)
        print(f"memory_stream worker: RSS over its cap of {cap_mib:.0f} MiB; stopping", file=sys.stderr, flush=True)
        os._exit(RSS_CAP_EXIT)

    threading.Thread(target=watch, daemon=True, name="rss-cap").start()


def _child(queue, root: str, rank: int, world: int, variant: str, cfg_dict: dict, threads: int,
           cap_mib: float | None = None) -> None:
    """Spawned worker process: :func:`run_worker` (under ``cap_mib`` when given), its result (or the
    traceback) put on ``queue``."""
    import torch

    from igan.config import Config

    torch.set_num_threads(threads)
    if cap_mib is not None:
        start_rss_cap(cap_mib)
    try:
        queue.put(run_worker(root, rank, world, variant, Config.from_dict(cfg_dict)))
    except BaseException:  # noqa: BLE001 - reported to the parent
        queue.put({"rank": rank, "variant": variant, "error": traceback.format_exc()})


def collect(queue, procs: dict, variant: str, grace_s: float = 5.0) -> list[dict]:
    """One result per rank of ``procs`` (``{rank: Process}``), joined: what the process put on
    ``queue``, or ``{rank, variant, error}`` when it ended without one (its RSS cap, the OOM killer)."""
    import queue as queues

    results, pending = [], dict(procs)
    while pending:
        try:
            # a dead process's result may still be in the pipe: wait a little longer once one is dead
            dead = any(p.exitcode is not None for p in pending.values())
            r = queue.get(timeout=grace_s if dead else 1.0)
        except queues.Empty:
            for rank, p in list(pending.items()):
                if p.exitcode is not None:
                    why = ("its RSS cap" if p.exitcode == RSS_CAP_EXIT
                           else "a signal (OOM killer?)" if p.exitcode < 0 else "an error")
                    results.append({"rank": rank, "variant": variant,
                                    "error": f"exit status {p.exitcode} without a result: stopped by {why}"})
                    pending.pop(rank).join()
            continue
        results.append(r)
        pending.pop(r["rank"]).join()
    return results


def spawn_workers(root: str, world: int, variant: str, cfg, threads: int = 1, parallel: bool = False,
                  cap_fraction: float = 0.8) -> list[dict]:
    """:func:`run_worker` results of ranks ``0..world-1`` (sorted by rank), each in its own fresh
    (spawned) process, one after another or, with ``parallel``, side by side; a rank that failed has
    ``error`` instead. Each process is capped at ``cap_fraction`` of ``MemAvailable`` at its launch
    (shared among those side by side)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    results = []
    for ranks in ([list(range(world))] if parallel else [[r] for r in range(world)]):
        cap = cap_fraction * mem_available() / MIB / len(ranks)
        procs = {r: ctx.Process(target=_child, args=(queue, root, r, world, variant, cfg.to_dict(), threads, cap))
                 for r in ranks}
        for p in procs.values():
            p.start()
        results += collect(queue, procs, variant)
    return sorted(results, key=lambda r: r["rank"])


# -- the baseline's footprint ----------------------------------------------------------------------
def projected_whole_split_bytes(root: str) -> int:
    """Bytes the baseline worker adds at its peak (an upper bound): the split's encoded bytes (the
    shard files), the uint8 array it is decoded into, and three float32 arrays of the same shape:
    ``to_model_range`` holds ``x.float()``, ``x / 127.5`` and their result ``- 1.0`` at once."""
    from igan.data.feed import decoded_bytes

    folder = os.path.join(root, "train")
    encoded = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(".tar"))
    float32 = decoded_bytes(root, "train")
    return encoded + float32 // 4 + 3 * float32


def mem_available() -> int:
    """``MemAvailable`` of this machine in bytes."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def whole_split_skip(root: str, stream_workers, side_by_side: int, fraction: float = 0.8) -> str | None:
    """Why the baseline cannot run on ``root`` on this machine now (its projected peak, the streaming
    worker's measured peak plus :func:`projected_whole_split_bytes`, times ``side_by_side``
    processes, over ``fraction`` of ``MemAvailable``), or None when it can."""
    base = worst_peak(stream_workers) or 0.0
    need = (projected_whole_split_bytes(root) + base * MIB) * side_by_side
    free = mem_available()
    if need <= fraction * free:
        return None
    return f"skipped: projected peak {need / 2**30:.1f} GiB > {fraction:.0%} of MemAvailable {free / 2**30:.1f} GiB"


# -- the report -----------------------------------------------------------------------------------
def worst_peak(workers) -> float | None:
    """The largest per-worker peak RSS (MiB) of one size and variant; None when it did not run
    (``workers`` is then the reason, a string) or a rank failed."""
    if not isinstance(workers, list) or any("error" in w for w in workers):
        return None
    return max(w["peak_mib"] for w in workers)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def summarise(runs: dict, sizes: list[int]) -> dict:
    """Per variant ``{peak_mib: {size: worst worker peak MiB or None}, ratio}`` (largest size over
    smallest); for ``whole_split`` also ``projected_peak_mib``/``projected_ratio`` where it did not
    run: the streaming worker's peak at that size plus the baseline's measured excess over it at the
    largest size it ran, scaled by size (the excess is the split copy, linear in images); and
    ``meets_target`` for igan's ``stream`` ratio."""
    small, large = str(min(sizes)), str(max(sizes))
    out = {}
    for variant in VARIANTS:
        peaks = {str(n): worst_peak(runs[variant][str(n)]) for n in sizes}
        out[variant] = {"peak_mib": peaks, "ratio": _ratio(peaks[large], peaks[small])}
    stream, whole = out["stream"]["peak_mib"], out["whole_split"]["peak_mib"]
    measured = [n for n in sizes if whole[str(n)] is not None and stream[str(n)] is not None]
    projected = dict(whole)
    if measured:
        m = str(max(measured))
        per_image = (whole[m] - stream[m]) / int(m)
        for n in sizes:
            if projected[str(n)] is None and stream[str(n)] is not None:
                projected[str(n)] = round(stream[str(n)] + per_image * n, 1)
    if projected != whole:
        out["whole_split"]["projected_peak_mib"] = projected
        out["whole_split"]["projected_ratio"] = _ratio(projected[large], projected[small])
    ratio = out["stream"]["ratio"]
    out["target_max_ratio"] = TARGET_RATIO
    out["meets_target"] = ratio is not None and ratio <= TARGET_RATIO
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="5000,50000", help="train-split sizes, comma-separated")
    ap.add_argument("--steps", type=int, default=20, help="training steps per worker")
    ap.add_argument("--workers", type=int, default=2, help="data-parallel ranks (world size)")
    ap.add_argument("--classes", type=int, default=100, help="classes of the synthetic sets")
    ap.add_argument("--batch-size", type=int, default=16, help="data.batch_size per worker")
    ap.add_argument("--samples-per-shard", type=int, default=1000, help="as igan shard's ImageNet default")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "igan-bench-memory"),
                    help="where the synthetic shard roots are cached")
    ap.add_argument("--parallel", action="store_true", help="run a size's ranks side by side")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="which of stream,whole_split to run")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    variants = [v for v in args.variants.split(",") if v]

    cfg = bench_config(args.classes, args.batch_size, args.steps)
    os.makedirs(args.work, exist_ok=True)
    t0 = time.perf_counter()
    roots = {n: shard_root(args.work, n, args.classes, args.samples_per_shard) for n in sizes}
    prep_s = time.perf_counter() - t0
    runs: dict = {v: {str(n): "not run" for n in sizes} for v in VARIANTS}
    for variant in variants:
        for n in sizes:
            if variant == "whole_split":
                skip = whole_split_skip(roots[n], runs["stream"][str(n)], args.workers if args.parallel else 1)
                if skip:
                    runs[variant][str(n)] = skip
                    continue
            runs[variant][str(n)] = spawn_workers(roots[n], args.workers, variant, cfg, args.threads, args.parallel)
            failed = [w["error"] for w in runs[variant][str(n)] if "error" in w]
            if failed and variant == "stream":  # igan's own figure: no number without it
                raise RuntimeError(f"a stream worker on {roots[n]} failed:\n{failed[0]}")
    summary = summarise(runs, sizes)
    print(json.dumps({
        "benchmark": "memory_stream", "preset": "imagenet128 (tiny widths)",
        "data": f"synthetic 128x128 JPEG q95, {args.classes} classes, {args.samples_per_shard} per shard",
        "val_per_class": cfg.data.val_per_class, "shuffle_buffer": cfg.data.shuffle_buffer,
        "stream_ratio": summary["stream"]["ratio"], "whole_split_ratio": summary["whole_split"]["ratio"],
        "target_max_ratio": TARGET_RATIO, "meets_target": summary["meets_target"],
        "peak_mib": {v: summary[v]["peak_mib"] for v in VARIANTS},
        "whole_split_projected_peak_mib": summary["whole_split"].get("projected_peak_mib"),
        "whole_split_projected_ratio": summary["whole_split"].get("projected_ratio"),
        "workers": runs, "args": vars(args), "data_prep_s": round(prep_s, 1),
        "elapsed_s": round(time.perf_counter() - t0, 1), "machine_cores": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
