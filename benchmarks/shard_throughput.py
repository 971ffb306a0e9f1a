"""Claim: `igan shard` turns ImageNet-like JPEGs into 128x128 shards faster than a plain PIL loop.

Builds an ImageNet-style tree of synthetic photos-like JPEGs (mixed sizes around 400x350), then in
the same run times:
  * igan:      ``pipelines.shard.shard_dataset("imagenet", ...)`` on Ray Data, run twice: "cold"
               (the first job, which also starts Ray's worker processes) and "warm" (the figure
               reported as igan_images_per_s; ``ray.init`` itself is never counted);
  * baseline:  a single-process PIL loop doing the same work (open, RGB, shorter side to 128 with
               an antialiasing filter, centre crop, JPEG q95, append to a tar), run before and
               after igan and averaged;
  * igan_1proc: igan's per-image function in one process without Ray (separates the per-image
               speed-up from the parallel one).
Prints one JSON line: images/s of each, the ratio igan/baseline and the CPUs Ray used.

    .venv/bin/python benchmarks/shard_throughput.py [--n 2000] [--cpus N] [--samples-per-shard 100]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_tree(root: str, n: int, classes: int = 10, seed: int = 0) -> list[str]:
    """``n`` JPEGs (quality 90) under ``root/train/<wnid>/``: smooth random scenes plus grain,
    sizes drawn around 400x350 (a fifth portrait). Returns their paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        wnid = f"n{1000000 + i % classes:08d}"
        d = os.path.join(root, "train", wnid)
        os.makedirs(d, exist_ok=True)
        w, h = int(rng.integers(340, 470)), int(rng.integers(290, 410))
        if rng.random() < 0.2:
            w, h = h, w
        low = Image.fromarray(rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
        arr = np.asarray(low, dtype=np.int16) + rng.integers(-12, 13, size=(h, w, 3))
        path = os.path.join(d, f"{wnid}_{i}.JPEG")
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def baseline_loop(paths: list[str], out: str, size: int = 128) -> int:
    """The plain single-process PIL loop; returns the number of images written."""
    with tarfile.open(out, "w") as tar:
        for i, path in enumerate(paths):
            img = Image.open(path).convert("RGB")
            w, h = img.size
            s = size / min(w, h)
            nw, nh = max(size, round(w * s)), max(size, round(h * s))
            img = img.resize((nw, nh), Image.Resampling.BICUBIC)
            left, top = (nw - size) // 2, (nh - size) // 2
            img = img.crop((left, top, left + size, top + size))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=95)
            for name, data in ((f"{i:08d}.jpg", buf.getvalue()), (f"{i:08d}.cls", b"0")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return len(paths)


def igan_one_process(paths: list[str], out: str, size: int = 128) -> int:
    """igan's per-image function (draft decode, resize+crop in one pass, q95) in one process."""
    from igan.data.imaging import process_bytes

    with tarfile.open(out, "w") as tar:
        for i, path in enumerate(paths):
            with open(path, "rb") as f:
                data, _ = process_bytes(f.read(), size=size, channels=3, fmt="jpg")
            info = tarfile.TarInfo(f"{i:08d}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return len(paths)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="number of JPEGs")
    ap.add_argument("--cpus", type=int, default=None, help="CPUs for the local Ray (default: all)")
    ap.add_argument("--samples-per-shard", type=int, default=100)
    ap.add_argument("--workdir", default=None, help="where to build the tree (default: a temp folder)")
    args = ap.parse_args()

    import ray

    from pipelines.shard import shard_dataset

    work = args.workdir or tempfile.mkdtemp(prefix="igan-bench-shard-")
    try:
        src = os.path.join(work, "raw")
        paths = sorted(make_tree(src, args.n))
        mean_kb = sum(os.path.getsize(p) for p in paths) / len(paths) / 1024

        def run_baseline() -> float:
            t = time.perf_counter()
            baseline_loop(paths, os.path.join(work, "baseline.tar"))
            return time.perf_counter() - t

        base_before = run_baseline()

        t = time.perf_counter()
        igan_one_process(paths, os.path.join(work, "one.tar"))
        one_s = time.perf_counter() - t

        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        timings = []
        for run in ("cold", "warm"):  # cold: the first job also starts Ray's worker processes
            t = time.perf_counter()
            (manifest,) = shard_dataset("imagenet", os.path.join(work, f"shards-{run}"), src=src, split="train",
                                        samples_per_shard=args.samples_per_shard, progress=False,
                                        log=lambda m: None)
            timings.append(time.perf_counter() - t)
        cold_s, igan_s = timings
        ray.shutdown()
        base_s = (base_before + run_baseline()) / 2  # bracket igan's runs: a shared machine's load drifts
        assert manifest["num_samples"] == args.n and manifest["image_size"] == [128, 128]
        print(json.dumps({
            "benchmark": "shard_throughput", "images": args.n, "mean_input_kb": round(mean_kb, 1),
            "output": "128x128 JPEG q95", "igan_images_per_s": round(args.n / igan_s, 1),
            "baseline_pil_loop_images_per_s": round(args.n / base_s, 1),
            "ratio": round(base_s / igan_s, 2),
            "igan_cold_images_per_s": round(args.n / cold_s, 1), "ratio_cold": round(base_s / cold_s, 2),
            "igan_one_process_images_per_s": round(args.n / one_s, 1),
            "ratio_vs_igan_one_process": round(one_s / igan_s, 2),
            "cores_used": cpus, "machine_cores": os.cpu_count(),
            "samples_per_shard": args.samples_per_shard,
        }))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
