"""tune_digits: the digits SSL test error of the trial `igan tune` chooses at 50 labels within a
fixed budget (8 trials, ASHA), against the default `digits` preset trained with the same epochs in
the same run.

The search is `igan tune digits --set data.labels_per_class=5` (labels fixed at 5 per class; the
other keys of tune_spaces/digits.py vary) with the local trial backend; the baseline is the preset
trained by igan's plain loop on the same shards, in a Ray task beside the search. The search
chooses its best trial on the validation hold-out (``val_ssl_error``); the figure reported is that
trial's EMA-classifier error on the whole digits test split (359 images), as is the baseline's.
Goal: <= 4 %. Prints one JSON line.

    .venv/bin/python benchmarks/tune_digits.py [--trials 8] [--epochs 150] [--concurrent 2]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def baseline_error(overrides: list[str], data_root: str, threads: int) -> dict:
    """The default digits preset (with ``overrides``) trained by the plain loop; its test error."""
    import torch

    from igan.config import apply_overrides
    from igan.data.feed import load_split
    from igan.loop import fit
    from igan.metrics import ssl_test_error
    from igan.presets import get_preset

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    cfg = apply_overrides(get_preset("digits"), overrides + [f"data.path={data_root}"])
    train, test = load_split(cfg, data_root, "train"), load_split(cfg, data_root, "test")
    trainer = fit(cfg, train)
    return {"error": float(ssl_test_error(trainer.classify, test.x, test.y)),
            "seconds": round(time.perf_counter() - t0, 1)}


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None or fraction != fraction else round(100 * fraction, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--concurrent", type=int, default=2, help="trials at once (one CPU each)")
    ap.add_argument("--scheduler", default="asha", choices=("asha", "fifo", "pbt"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import ray

    from pipelines.job_inputs import ensure_data
    from pipelines.tune import TuneOptions, run_search
    from igan.presets import get_preset

    work = Path(tempfile.mkdtemp(prefix="igan_tune_digits_"))
    os.environ.setdefault("IGAN_HOME", str(work / "home"))
    data_root = ensure_data(get_preset("digits"), None, log=lambda m: None)
    common = [f"train.epochs={args.epochs}", f"eval.every={args.eval_every}", "eval.scorer=none",
              "data.labels_per_class=5"]
    ray.init(num_cpus=args.concurrent + 1, include_dashboard=False, log_to_driver=False)
    t0 = time.perf_counter()
    base_ref = ray.remote(num_cpus=1)(baseline_error).remote(common, data_root, 1)
    opts = TuneOptions(space="digits", num_samples=args.trials, scheduler=args.scheduler,
                       max_concurrent=args.concurrent, cpus_per_trial=1, overrides=common, data=data_root,
                       storage=str(work / "ray"), tracking_uri=f"sqlite:///{work}/mlflow.db",
                       experiment="tune_digits", seed=args.seed, register=False, verbose=0,
                       trial_backend="local")
    with contextlib.redirect_stdout(sys.stderr):  # Tune's and MLflow's own lines: stdout keeps one JSON line
        summary = run_search(opts, log=lambda m: print(m, file=sys.stderr, flush=True))
    base = ray.get(base_ref)
    ray.shutdown()
    trials = summary["trials"]
    best_test = next(t["test_ssl_error"] for t in trials if t["trial"] == summary["best_trial"])
    print(json.dumps({
        "benchmark": "tune_digits", "labels": 50, "epochs": args.epochs, "trials": args.trials,
        "scheduler": args.scheduler, "concurrent": args.concurrent,
        "best_test_error_pct": round(100 * best_test, 2),
        "best_val_error_pct": round(100 * summary["best_value"], 2),
        "baseline_error_pct": round(100 * base["error"], 2), "goal_pct": 4.0,
        "goal_met": best_test <= 0.04,
        "best_config": summary["best_config"],
        "trial_epochs_total": sum(int(t["epoch"] or 0) for t in trials),
        "trials_table": [{"val_error_pct": _pct(t.get("val_ssl_error")), "test_error_pct": _pct(t.get("test_ssl_error")),
                          "epochs": t["epoch"],
                          **{k.split(".", 1)[1]: (round(v, 6) if isinstance(v, float) else v)
                             for k, v in t.items() if k in summary["best_config"]}}
                         for t in trials],
        "baseline_seconds": base["seconds"], "seconds": round(time.perf_counter() - t0, 1),
    }), flush=True)


if __name__ == "__main__":
    main()
