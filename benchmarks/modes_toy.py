"""modes_toy: modes captured and high-quality fraction (2,500 samples) on ring8 and grid25, with and
without minibatch discrimination, for one or more seeds. Prints one JSON line: per preset and
variant, each seed's result, the means, and how many seeds met the target (ring8: 8/8 modes with
>= 90% high quality; grid25: >= 24/25 with >= 80%). grid25's preset trains without MBD: with it on
top of the preset's R1 penalty a seed is many times slower on a CPU (see benchmarks/RESULTS.md;
``--mbd off`` skips it;
``--mbd on --set techniques.r1_gamma=0 --set train.epochs=30 --set optim.decay_start_epoch=15`` is
the former MBD recipe).

    .venv/bin/python benchmarks/modes_toy.py [--seeds 0,1,2] [--presets grid25] [--mbd off] [--set key=value ...]
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

#: (minimum modes captured, minimum high-quality percentage) per preset.
TARGETS = {"ring8": (8, 90.0), "grid25": (24, 80.0)}


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
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds")
    ap.add_argument("--presets", default="ring8,grid25", help=f"comma-separated, of {', '.join(TARGETS)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mbd", choices=("both", "on", "off"), default="both",
                    help="run with minibatch discrimination, without it, or both (default)")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        ap.error(f"--seeds: comma-separated integers, e.g. 0,1,2; got {args.seeds!r}")
    presets = args.presets.split(",")
    unknown = sorted(set(presets) - set(TARGETS))
    if unknown:
        ap.error(f"--presets: unknown {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    torch.set_num_threads(args.threads)
    out = {"benchmark": "modes_toy", "seeds": seeds, "overrides": args.set, "threads": args.threads}
    for preset in presets:
        for mbd in {"both": (True, False), "on": (True,), "off": (False,)}[args.mbd]:
            out[f"{preset}_{'mbd' if mbd else 'no_mbd'}"] = summarise(
                preset, [run(preset, mbd, seed, args.set) for seed in seeds])
    print(json.dumps(out))


def summarise(preset: str, runs: list[dict]) -> dict:
    """Per-seed results with their means and the number of seeds meeting ``TARGETS[preset]``."""
    modes, hq = TARGETS[preset]
    return {"per_seed": runs, "modes_mean": round(sum(r["modes_captured"] for r in runs) / len(runs), 2),
            "high_quality_pct_mean": round(sum(r["high_quality_pct"] for r in runs) / len(runs), 1),
            "seeds_meeting_target": sum(r["modes_captured"] >= modes and r["high_quality_pct"] >= hq for r in runs),
            "target": f">= {modes}/{runs[0]['modes_total']} modes, >= {hq:g}% high quality"}


if __name__ == "__main__":
    main()
