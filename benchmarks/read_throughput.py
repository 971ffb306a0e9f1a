"""Claim: igan's streaming shard reader delivers decoded 128x128 images at >= 2x the rate of
torchvision's ``ImageFolder`` + ``DataLoader`` over the same images with the same number of workers.

Writes ``--n`` 128x128 JPEG (q95) images as an ImageFolder tree and shards that tree with igan (same
pixels, re-encoded at q95 by ``igan shard``'s local engine), then in the same run reads ``--epochs``
full epochs of ``uint8 [B, 3, 128, 128]`` batches from each reader, alternating epoch by epoch (two
warm-up epochs each first, page cache warm for all):

- ``igan``: ``make_loader`` as ``igan train`` streams by default: ``--workers`` decode threads in
  the consuming process (no loader processes), every shard checked against its manifest as it
  is read (``data.verify_shards=true``, the default: sha256, count, labels, names; a local shard
  is hashed again only once it changed since this process verified it);
- ``igan_hash_every_read``: the same, hashing every shard on every read (the verified-file memory
  cleared before each epoch): what verification costs on an object store, or in a first epoch;
- ``igan_verify_off``: the same without the sha256 (``data.verify_shards=false``; the count,
  label and name checks stay on), the reference that prices verification;
- ``igan_processes``: ``--workers`` DataLoader worker processes, one decode thread each;
- the baseline: ``ImageFolder`` with ``--workers`` DataLoader worker processes;

then igan with one thread against ImageFolder in-process (``num_workers=0``: per-image CPU cost).
Prints one JSON line with the median images/s of each and the ratios; ``verify_cost`` is the share
of throughput verification costs, ``1 - igan / igan_verify_off`` (target <= 0.05), and
``verify_cost_hash_every_read`` the same for ``igan_hash_every_read``; the ``*_cpu_*`` fields
compare CPU seconds per image of the consuming process instead (steadier on a busy machine).

    .venv/bin/python benchmarks/read_throughput.py [--n 4000] [--workers 2] [--batch-size 64]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_images(root: str, n: int, classes: int = 10, seed: int = 0) -> None:
    """``n`` 128x128 JPEG q95 files under ``root/<wnid>/`` (ImageFolder layout, also a valid
    ImageNet val-style tree for ``igan shard``)."""
    from igan.data.imaging import encode

    rng = np.random.default_rng(seed)
    for i in range(n):
        wnid = f"n{1000000 + i % classes:08d}"
        d = os.path.join(root, wnid)
        os.makedirs(d, exist_ok=True)
        low = Image.fromarray(rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)).resize((128, 128), Image.Resampling.BICUBIC)
        arr = np.clip(np.asarray(low, dtype=np.int16) + rng.integers(-12, 13, size=(128, 128, 3)), 0, 255)
        with open(os.path.join(d, f"{wnid}_{i}.JPEG"), "wb") as f:
            f.write(encode(arr.astype(np.uint8), "jpg"))


def epoch_rate(loader) -> tuple[float, int, float]:
    """(images/s, images, CPU seconds of this process per image) of one full pass over ``loader``."""
    n, t, c = 0, time.perf_counter(), time.process_time()
    for images, _labels in loader:
        n += images.shape[0]
    return n / (time.perf_counter() - t), n, (time.process_time() - c) / max(n, 1)


class HashEveryRead:
    """``loader`` with the verified-shard memory cleared before each pass, so every shard it reads
    is hashed (as on an object store, or in the first epoch of a process)."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        from igan.data.shards import forget_verified

        forget_verified()
        return iter(self.loader)


def interleaved(loaders: dict, epochs: int, warmup: int = 2) -> dict[str, tuple[float, int, float]]:
    """Median images/s, total images and median CPU seconds per image per loader over ``epochs``
    passes, alternating loaders epoch by epoch (so a busy machine's drift hits all of them alike)
    in a seeded random order per round (so none always runs right after the same one, e.g. while
    the baseline's worker processes shut down), after ``warmup`` passes each (the allocator and
    page cache take a couple of passes to settle)."""
    for _ in range(warmup):
        for loader in loaders.values():
            epoch_rate(loader)
    rates = {name: [] for name in loaders}
    cpus = {name: [] for name in loaders}
    counts = dict.fromkeys(loaders, 0)
    for e in range(epochs):
        for name in np.random.default_rng([7, e]).permutation(list(loaders)):
            r, n, c = epoch_rate(loaders[name])
            rates[name].append(r)
            cpus[name].append(c)
            counts[name] += n
    return {name: (float(np.median(rates[name])), counts[name], float(np.median(cpus[name]))) for name in loaders}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=2, help="workers per reader (igan: decode threads or processes)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--samples-per-shard", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=5, help="timed epochs per reader (after two warm-up epochs)")
    args = ap.parse_args()

    import torch
    from torchvision import datasets, transforms

    torch.set_num_threads(1)  # the main process only collects batches; loader workers use 1 thread anyway

    from igan.data.shards import make_loader
    from pipelines.shard import shard_dataset

    work = tempfile.mkdtemp(prefix="igan-bench-read-")
    try:
        tree = os.path.join(work, "raw", "train")
        make_images(tree, args.n)
        # size 128 == the files' size, so igan stores the same pixels (re-encoded at q95)
        shard_dataset("imagenet", os.path.join(work, "shards"), src=os.path.join(work, "raw"), split="train",
                      samples_per_shard=args.samples_per_shard, engine="local", progress=False, log=lambda m: None)
        baseline = torch.utils.data.DataLoader(
            datasets.ImageFolder(tree, transform=transforms.PILToTensor()), batch_size=args.batch_size,
            shuffle=True, num_workers=args.workers)
        shards = os.path.join(work, "shards")
        igan = make_loader(shards, "train", batch_size=args.batch_size, decode_threads=args.workers,
                           shuffle_buffer=2000)
        igan_off = make_loader(shards, "train", batch_size=args.batch_size, decode_threads=args.workers,
                               shuffle_buffer=2000, verify=False)
        igan_every = HashEveryRead(make_loader(shards, "train", batch_size=args.batch_size,
                                               decode_threads=args.workers, shuffle_buffer=2000))
        igan_proc = make_loader(shards, "train", batch_size=args.batch_size, num_workers=args.workers,
                                decode_threads=1, shuffle_buffer=2000)
        res = interleaved({"base": baseline, "igan": igan, "igan_hash_every_read": igan_every,
                           "igan_verify_off": igan_off, "igan_processes": igan_proc}, args.epochs)
        assert {n for _, n, _ in res.values()} == {args.n * args.epochs}, res
        base_rate, igan_rate, proc_rate = res["base"][0], res["igan"][0], res["igan_processes"][0]
        off_rate, every_rate = res["igan_verify_off"][0], res["igan_hash_every_read"][0]
        cpu = {name: res[name][2] for name in ("igan", "igan_hash_every_read", "igan_verify_off")}
        # one thread each, no worker processes: per-image CPU cost, no IPC
        res1 = interleaved({
            "base": torch.utils.data.DataLoader(baseline.dataset, batch_size=args.batch_size, shuffle=True),
            "igan": make_loader(shards, "train", batch_size=args.batch_size, decode_threads=1,
                                shuffle_buffer=2000)}, max(1, args.epochs - 1))
        base_1, igan_1 = res1["base"][0], res1["igan"][0]
        print(json.dumps({
            "benchmark": "read_throughput", "images": args.n, "image": "128x128 JPEG q95 -> uint8 [3,128,128]",
            "workers": args.workers, "igan_decode_threads": args.workers,
            "igan_images_per_s": round(igan_rate, 1), "baseline_imagefolder_images_per_s": round(base_rate, 1),
            "ratio": round(igan_rate / base_rate, 2), "target_min_ratio": 2.0,
            "meets_target": igan_rate / base_rate >= 2.0,
            "igan_verify_off_images_per_s": round(off_rate, 1),
            "igan_hash_every_read_images_per_s": round(every_rate, 1),
            "ratio_hash_every_read": round(every_rate / base_rate, 2),
            "verify_cost": round(1 - igan_rate / off_rate, 3), "verify_cost_target_max": 0.05,
            "meets_verify_cost_target": 1 - igan_rate / off_rate <= 0.05,
            "verify_cost_hash_every_read": round(1 - every_rate / off_rate, 3),
            "cpu_us_per_image": {k: round(v * 1e6, 1) for k, v in cpu.items()},
            "verify_cpu_cost": round(1 - cpu["igan_verify_off"] / cpu["igan"], 3),
            "verify_cpu_cost_hash_every_read": round(1 - cpu["igan_verify_off"] / cpu["igan_hash_every_read"], 3),
            "igan_worker_processes_images_per_s": round(proc_rate, 1),
            "ratio_worker_processes": round(proc_rate / base_rate, 2),
            "igan_in_process_images_per_s": round(igan_1, 1), "baseline_in_process_images_per_s": round(base_1, 1),
            "ratio_in_process": round(igan_1 / base_1, 2),
            "batch_size": args.batch_size, "machine_cores": os.cpu_count(),
        }))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
