"""Claim: on this 2-core machine, igan train's data-parallel path (Ray Train, gloo DDP) with 2 workers
x 1 thread trains the digits preset at >= 1.7x the throughput (real examples per second) of 1 worker
x 1 thread, measured in the same run.

Both runs use igan train's worker path (per-rank feed, ``prepare_model``, per-step non-finite
agreement, :func:`pipelines.worker.run_epoch`) with the per-worker batch ``data.batch_size``; each
worker times its steady state (``--warmup`` steps, then the median of ``--chunks`` chunks). The
1-worker run goes first and last (their mean is the baseline) so drifting machine load does not
favour either side. Throughput = workers x batch / step time. Prints one JSON line.

    .venv/bin/python benchmarks/scaling_cpu.py [--steps 200] [--model digits]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ray_overhead import bench_config, ray_step_time, start_ray  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="digits", choices=("digits", "cifar10"))
    p.add_argument("--batch-size", type=int, help="per-worker batch (default: the preset's)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--chunks", type=int, default=4)
    args = p.parse_args()

    start_ray(2)
    cfg = bench_config(args.model, args.batch_size)
    b = cfg.data.batch_size
    with tempfile.TemporaryDirectory() as storage:
        one_a = ray_step_time(cfg, 1, 1, args.warmup, args.steps, args.chunks, storage)["step_s"]
        two = ray_step_time(cfg, 2, 1, args.warmup, args.steps, args.chunks, storage)["step_s"]
        one_b = ray_step_time(cfg, 1, 1, args.warmup, args.steps, args.chunks, storage)["step_s"]
    one = (one_a + one_b) / 2
    tput1, tput2 = b / one, 2 * b / two
    print(json.dumps({
        "benchmark": "scaling_cpu", "model": args.model, "per_worker_batch": b, "cpus": os.cpu_count(),
        "one_worker": {"step_s": round(one, 5), "step_s_first": round(one_a, 5), "step_s_last": round(one_b, 5),
                       "examples_per_s": round(tput1, 1)},
        "two_workers": {"step_s": round(two, 5), "examples_per_s": round(tput2, 1)},
        "speedup": round(tput2 / tput1, 3), "target_min_speedup": 1.7, "meets_target": tput2 / tput1 >= 1.7,
    }))


if __name__ == "__main__":
    main()
