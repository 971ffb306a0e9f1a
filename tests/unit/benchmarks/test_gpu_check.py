"""benchmarks/gpu_check.py on CPU: the skip path without a GPU, the peak table, the FLOP counter
and one measured step at tiny widths."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import REPO  # noqa: E402
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
TINY_CIFAR = ["model.d_widths=[8,8]", "model.g_widths=[16,8,8]", "techniques.wn_init_examples=8"]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_prints_one_skip_line_and_exits_0():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))  # no GPU, even on a GPU machine
    res = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == {"benchmark": "gpu_check", "skipped": "no CUDA device"}


@pytest.mark.parametrize("name,peak", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.0), ("NVIDIA H200 NVL", 835.0), ("NVIDIA GH200 480GB", 989.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100-PCIE-40GB", 312.0), ("NVIDIA L4", 121.0),
    ("NVIDIA L40S", 362.0), ("NVIDIA A10G", None), ("Tesla T4", None), ("", None)])
def test_peak_table_matches_specific_names_first(gpu_check, name, peak):
    assert gpu_check.peak_bf16_tflops(name) == peak


def test_fraction_of_peak(gpu_check):
    assert gpu_check.fraction_of_peak(2e12, 1.0, 4.0) == pytest.approx(0.5)
    assert gpu_check.fraction_of_peak(2e12, 0.5, 8.0) == pytest.approx(0.5)
    assert gpu_check.fraction_of_peak(2e12, 1.0, None) is None


def test_count_flops_counts_forward_and_backward(gpu_check):
    layer = torch.nn.Linear(16, 8)
    forward = 2 * 4 * 16 * 8  # one multiply-add per weight per row
    x = torch.rand(4, 16)
    assert gpu_check.count_flops(lambda: layer(x)) == forward
    assert gpu_check.count_flops(lambda: layer(x).sum().backward()) == 2 * forward  # + the weight gradient
    x.requires_grad_(True)
    assert gpu_check.count_flops(lambda: layer(x).sum().backward()) == 3 * forward  # + the input gradient


def test_measure_step_on_cpu_at_tiny_widths(gpu_check):
    torch.set_num_threads(1)
    cfg = gpu_check.preset_config("cifar10", gpu_check.FAST + TINY_CIFAR, "cpu")
    assert cfg.train.amp == "bf16" and cfg.train.channels_last  # autocast and layout apply on CUDA only
    small = gpu_check.measure_step(cfg, steps=1, warmup=1, device="cpu", peak_tflops=1.0, batch_size=4)
    large = gpu_check.measure_step(cfg, steps=1, warmup=0, device="cpu", peak_tflops=None, batch_size=8)
    assert small["batch"] == 4 and small["peak_memory_gib"] is None and small["images_per_s"] > 0
    assert small["fraction_of_peak"] is not None and large["fraction_of_peak"] is None
    # the CIFAR step is per-example work (no minibatch discrimination, no reference batch): FLOPs double
    assert small["flops_per_step"] > 0 and large["flops_per_step"] == 2 * small["flops_per_step"]
    json.dumps(small)  # the JSON line carries it as it is
