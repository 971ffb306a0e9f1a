"""ssl_digits: semi-supervised test error on sklearn digits with 50 labels (5 per class), 5 seeds.

Compares igan (the `digits` preset, plain loop) with, in the same run, a supervised-only classifier
(the same discriminator network and optimiser trained on the 50 labels alone) and sklearn's
LabelSpreading (kNN). Prints one JSON line.

    .venv/bin/python benchmarks/ssl_digits.py [--seeds 5] [--set key=value ...]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from igan.config import apply_overrides
from igan.data.feed import MemoryFeed
from igan.data.memory import load_embedded
from igan.layers import data_dependent_init
from igan.loop import fit
from igan.metrics import ssl_test_error
from igan.models import build_models
from igan.presets import get_preset


def run_igan(cfg, train, test):
    trainer = fit(cfg, train)  # carves the validation hold-out out of train, as the baselines below
    return ssl_test_error(trainer.classify, test.x, test.y)


def carved(cfg, train):
    """``(train minus the validation hold-out, the labeled subset)``: what igan trains on."""
    feed = MemoryFeed(train, cfg)
    return feed.train, feed.train.subset(feed.labeled)


def run_supervised(cfg, train, test):
    """The same D, trained with cross-entropy on the labeled subset only (same epochs' worth of steps)."""
    torch.manual_seed(cfg.train.seed)
    _, D = build_models(cfg)
    train, labeled = carved(cfg, train)
    x, y = labeled.x, labeled.y
    data_dependent_init(D, train.x[:500])
    opt = torch.optim.Adam(D.parameters(), lr=cfg.optim.lr_d, betas=(cfg.optim.beta1, cfg.optim.beta2))
    steps = cfg.train.epochs * (len(train) // cfg.data.batch_size)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    for _ in range(steps):
        b = torch.randint(0, len(x), (cfg.data.batch_size,), generator=gen)
        loss = F.cross_entropy(D(x[b])[0], y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    D.eval()
    return ssl_test_error(lambda t: D(t)[0], test.x, test.y)


def run_label_spreading(cfg, train, test):
    from sklearn.semi_supervised import LabelSpreading

    feed = MemoryFeed(train, cfg)
    train = feed.train
    idx = feed.labeled.numpy()
    y = np.full(len(train), -1)
    y[idx] = train.y.numpy()[idx]
    model = LabelSpreading(kernel="knn", n_neighbors=7, max_iter=100).fit(train.x.flatten(1).numpy(), y)
    return float((model.predict(test.x.flatten(1).numpy()) != test.y.numpy()).mean())


def summarise(errors, seconds):
    e = np.array(errors) * 100
    return {"mean_error_pct": round(float(e.mean()), 2), "std_error_pct": round(float(e.std()), 2),
            "errors_pct": [round(float(v), 2) for v in e], "cpu_seconds_per_run": round(float(np.mean(seconds)), 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {name: ([], []) for name in ("igan", "supervised", "label_spreading")}
    runners = {"igan": run_igan, "supervised": run_supervised, "label_spreading": run_label_spreading}
    for seed in range(args.seeds):
        cfg = apply_overrides(get_preset("digits"), [f"train.seed={seed}", f"data.label_seed={seed}", *args.set])
        train, test = load_embedded(cfg, "train"), load_embedded(cfg, "test")
        for name, runner in runners.items():
            t0 = time.process_time()
            results[name][0].append(runner(cfg, train, test))
            results[name][1].append(time.process_time() - t0)
    out = {"benchmark": "ssl_digits", "labels": 50, "seeds": args.seeds, "overrides": args.set}
    out.update({name: summarise(*v) for name, v in results.items()})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
