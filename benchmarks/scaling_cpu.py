"""Claim: on this 2-core machine, igan train's data-parallel path (Ray Train, gloo DDP) with 2 workers
x 1 thread trains at >= 1.7x the throughput (real examples per second) of 1 worker x 1 thread,
measured in the same run.

Both runs use igan train's worker path (per-rank feed, ``prepare_model``, per-step non-finite
agreement, :func:`igan.loop.run_epoch`) with the per-worker batch ``data.batch_size``; each
worker times its steady state (``--warmup`` steps, then the median of ``--chunks`` chunks). The
1-worker run goes first and last (their mean is the baseline) so drifting machine load does not
favour either side. Throughput = workers x batch / step time.

Two models by default: the CIFAR-10 conv pair (the compute-heavy model data parallelism is for)
and the digits MLP pair (1.15 M parameters all-reduced twice per short step: communication-bound
on gloo; step times in benchmarks/RESULTS.md). A third run per model trains 2 workers without DDP
or collectives (``independent``): the machine's ceiling without communication, so the gap to it is
the all-reduce's cost. Prints one JSON line.

    .venv/bin/python benchmarks/scaling_cpu.py [--models cifar10,digits] [--steps 200] [--cifar-steps 8]
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

TARGET = 1.7


def scaling(cfg, warmup: int, steps: int, chunks: int, storage: str) -> dict:
    """Step times and throughputs of 1 worker, 2 workers (DDP) and 2 independent workers."""
    b = cfg.data.batch_size
    one_a = ray_step_time(cfg, 1, 1, warmup, steps, chunks, storage)["step_s"]
    two = ray_step_time(cfg, 2, 1, warmup, steps, chunks, storage)["step_s"]
    free = ray_step_time(cfg, 2, 1, warmup, steps, chunks, storage, independent=True)["step_s"]
    one_b = ray_step_time(cfg, 1, 1, warmup, steps, chunks, storage)["step_s"]
    one = (one_a + one_b) / 2
    tput1, tput2, tput_free = b / one, 2 * b / two, 2 * b / free
    return {
        "per_worker_batch": b,
        "one_worker": {"step_s": round(one, 5), "step_s_first": round(one_a, 5), "step_s_last": round(one_b, 5),
                       "examples_per_s": round(tput1, 1)},
        "two_workers": {"step_s": round(two, 5), "examples_per_s": round(tput2, 1)},
        "two_independent_workers": {"step_s": round(free, 5), "examples_per_s": round(tput_free, 1)},
        "speedup": round(tput2 / tput1, 3), "ceiling_without_communication": round(tput_free / tput1, 3),
        "meets_target": tput2 / tput1 >= TARGET,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="cifar10,digits", help="comma-separated: cifar10, digits")
    p.add_argument("--batch-size", type=int, help="per-worker batch (default: each preset's)")
    p.add_argument("--warmup", type=int, default=20, help="digits warm-up steps")
    p.add_argument("--steps", type=int, default=200, help="timed digits steps")
    p.add_argument("--cifar-warmup", type=int, default=1)
    p.add_argument("--cifar-steps", type=int, default=8, help="timed CIFAR-10 steps (seconds each on one thread)")
    p.add_argument("--chunks", type=int, default=4)
    args = p.parse_args()

    start_ray(2)
    out: dict = {"benchmark": "scaling_cpu", "cpus": os.cpu_count(), "threads_per_worker": 1,
                 "target_min_speedup": TARGET}
    with tempfile.TemporaryDirectory() as storage:
        for model in args.models.split(","):
            cifar = model == "cifar10"
            w, s = (args.cifar_warmup, args.cifar_steps) if cifar else (args.warmup, args.steps)
            out[model] = scaling(bench_config(model, args.batch_size), w, s, min(args.chunks, s), storage)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
