"""gpu_check: what one GPU gives igan. Runs the CUDA tests (``pytest -m gpu``), then times
``igan.trainer.Trainer.train_step`` (one D step + G steps) of the ``cifar10`` and ``imagenet128``
presets at their batch sizes in bf16 autocast with channels_last: images/s, peak CUDA memory, and
model FLOP/s as a fraction of the GPU's dense bf16 peak (FLOPs counted by
``torch.utils.flop_counter.FlopCounterMode`` on one step). The baseline, measured in the same run,
is the same step in fp32 with the default memory layout. Prints one JSON line. Without a CUDA
device it prints one JSON line with ``"skipped": "no CUDA device"`` and exits 0.

On one GPU it stays under 8 minutes: the tests get at most ``--tests-timeout`` seconds and each
preset a fixed number of steps; a preset that would start after ``--budget`` seconds is skipped.

    python benchmarks/gpu_check.py [--steps 30] [--warmup 5] [--no-tests]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PRESETS = ("cifar10", "imagenet128")
FAST = ["train.amp=bf16", "train.channels_last=true"]
BASELINE = ["train.amp=off", "train.channels_last=false"]

#: Dense (no 2:4 sparsity) bf16 tensor-core peaks in TFLOP/s from the vendors' datasheets, matched
#: in order against ``torch.cuda.get_device_name()``: the first pattern that matches wins, so the
#: specific variants (NVL, PCIe) come before their family.
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    (r"GH200", 989.0),
    (r"H200 NVL", 835.0),
    (r"H200", 989.0),
    (r"H100 NVL", 835.0),
    (r"H100 PCIe", 756.0),
    (r"H100", 989.0),       # SXM5: "NVIDIA H100 80GB HBM3"
    (r"H800", 989.0),
    (r"B200", 2250.0),
    (r"A100", 312.0),
    (r"A800", 312.0),
    (r"L40S", 362.0),
    (r"L40\b", 181.0),
    (r"L4\b", 121.0),
    (r"A10\b", 125.0),
]


def peak_bf16_tflops(device_name: str) -> float | None:
    """The dense bf16 peak (TFLOP/s) of the GPU called ``device_name``, or None when the table has
    no entry for it."""
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name):
            return tflops
    return None


def fraction_of_peak(flops_per_step: float, seconds_per_step: float, peak_tflops: float | None) -> float | None:
    """Achieved model FLOP/s over the peak, or None without a peak."""
    if peak_tflops is None or seconds_per_step <= 0:
        return None
    return flops_per_step / seconds_per_step / (peak_tflops * 1e12)


def count_flops(fn) -> int:
    """FLOPs of the matrix multiplications and convolutions that ``fn()`` runs, forward and
    backward (FlopCounterMode counts aten ops as they dispatch; element-wise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def preset_config(preset: str, overrides: list[str], device: str):
    """The preset's validated Config with ``overrides`` and ``train.device``."""
    from igan.config import apply_overrides
    from igan.presets import get_preset

    return apply_overrides(get_preset(preset), [*overrides, f"train.device={device}"])


def random_batch(cfg, device: str, batch_size: int | None = None):
    """``(x_unl, x_unl2, x_lab, y_lab)`` of random images in [-1, 1] and labels, on ``device``
    (throughput does not depend on the pixel values; on the device so no copy is timed)."""
    b = batch_size or cfg.data.batch_size
    shape = (b, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    x = [torch.rand(shape, device=device) * 2 - 1 for _ in range(3)]
    y = torch.randint(0, cfg.data.num_classes, (b,), device=device)
    return x[0], x[1], x[2], y


def measure_step(cfg, steps: int, warmup: int, device: str, peak_tflops: float | None = None,
                 batch_size: int | None = None) -> dict:
    """Time ``steps`` calls of ``Trainer.train_step`` after ``warmup`` calls on one random batch.
    Returns the batch size, images/s (real images per step, ``data.batch_size``, over the mean step
    time), step time in ms, peak CUDA memory in GiB (None on CPU), FLOPs of one step, model
    TFLOP/s and its fraction of ``peak_tflops`` (None without a peak)."""
    from igan.trainer import Trainer

    batch = random_batch(cfg, device, batch_size)
    trainer = Trainer(cfg, init_batch=batch[0], device=device)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        trainer.train_step(*batch)
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(*batch)  # returns floats: each step ends synchronised with the device
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / steps
    peak_memory = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    flops = count_flops(lambda: trainer.train_step(*batch))  # after timing: the counter slows dispatch
    fraction = fraction_of_peak(flops, seconds, peak_tflops)
    return {"batch": int(batch[0].shape[0]), "images_per_s": round(batch[0].shape[0] / seconds, 1),
            "step_ms": round(seconds * 1e3, 3),
            "peak_memory_gib": None if peak_memory is None else round(peak_memory, 3),
            "flops_per_step": flops, "model_tflops_per_s": round(flops / seconds / 1e12, 3),
            "fraction_of_peak": None if fraction is None else round(fraction, 4)}


def bench_preset(preset: str, steps: int, warmup: int, device: str, peak_tflops: float | None,
                 extra: list[str] = ()) -> dict:
    """bf16 + channels_last against the fp32 baseline for one preset (``extra`` overrides both)."""
    fast = measure_step(preset_config(preset, FAST + list(extra), device), steps, warmup, device, peak_tflops)
    base = measure_step(preset_config(preset, BASELINE + list(extra), device), steps, warmup, device, peak_tflops)
    return {"bf16_channels_last": fast, "fp32": base,
            "speedup": round(fast["images_per_s"] / base["images_per_s"], 3)}


def run_gpu_tests(timeout: float) -> dict:
    """``pytest -m gpu`` on the repository's tests in a subprocess: exit status and counts (from
    its JUnit XML), or ``timed_out``."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "gpu.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
               f"--junitxml={report}", "tests"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        try:
            res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"timed_out": True, "timeout_s": timeout}
        out = {"returncode": res.returncode}
        if report.exists():
            suite = ET.parse(report).getroot()
            suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
            counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
            counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
            out.update(counts)
        if res.returncode not in (0, 5):  # 5: nothing collected
            out["tail"] = (res.stdout + res.stderr)[-1500:]
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="timed steps per measurement (default 30)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    ap.add_argument("--no-tests", action="store_true", help="skip pytest -m gpu")
    ap.add_argument("--tests-timeout", type=float, default=240.0, help="seconds for pytest -m gpu (default 240)")
    ap.add_argument("--budget", type=float, default=420.0,
                    help="no preset starts after this many seconds (default 420: the run ends within 8 minutes)")
    args = ap.parse_args(argv)
    out: dict = {"benchmark": "gpu_check"}
    if not torch.cuda.is_available():
        out["skipped"] = "no CUDA device"
        print(json.dumps(out))
        return 0
    t0 = time.perf_counter()
    name = torch.cuda.get_device_name(0)
    peak = peak_bf16_tflops(name)
    out.update(device=name, torch=torch.__version__, cuda=torch.version.cuda, peak_bf16_tflops=peak)
    out["tests"] = {"skipped": "--no-tests"} if args.no_tests else run_gpu_tests(args.tests_timeout)
    for preset in PRESETS:
        if time.perf_counter() - t0 > args.budget:
            out[preset] = {"skipped": f"past the {args.budget:g} s budget"}
            continue
        try:
            out[preset] = bench_preset(preset, args.steps, args.warmup, "cuda", peak)
        except Exception as exc:  # report and go on: one JSON line whatever happens
            out[preset] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
        torch.cuda.empty_cache()
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
