"""modes_toy: modes captured and high-quality fraction (2,500 samples) on ring8 and grid25, with and
without minibatch discrimination. Prints one JSON line.

    .venv/bin/python benchmarks/modes_toy.py [--seed 0] [--set key=value ...]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from igan.config import apply_overrides
from igan.data.memory import load_embedded
from igan.data.toy import TOY_STD, toy_centers
from igan.loop import fit
from igan.metrics import mode_coverage
from igan.presets import get_preset


def run(preset: str, mbd: bool, seed: int, overrides: list[str]) -> dict:
    cfg = apply_overrides(get_preset(preset), [f"train.seed={seed}", f"techniques.minibatch_discrimination={mbd}",
                                               *overrides])
    t0 = time.process_time()
    trainer = fit(cfg, load_embedded(cfg, "train"))
    samples = trainer.generate(2500, seed=seed + 1)
    modes, hq = mode_coverage(samples.numpy(), toy_centers(preset), TOY_STD[preset])
    return {"modes_captured": int(modes), "modes_total": len(toy_centers(preset)),
            "high_quality_pct": round(100 * hq, 1), "cpu_seconds": round(time.process_time() - t0, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = {"benchmark": "modes_toy", "seed": args.seed, "overrides": args.set}
    for preset in ("ring8", "grid25"):
        for mbd in (True, False):
            out[f"{preset}_{'mbd' if mbd else 'no_mbd'}"] = run(preset, mbd, args.seed, args.set)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
