"""step_throughput: samples/s of one igan Trainer step (D step + G step, feature matching, K+1
loss) for the MNIST and CIFAR models on CPU, against a straightforward PyTorch loop of the same
models and losses written here (separate D passes per batch, no parameter freezing in the G step).
Prints one JSON line with both figures and their ratio.

    .venv/bin/python benchmarks/step_throughput.py [--steps 20] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from igan.config import apply_overrides
from igan.presets import get_preset
from igan.trainer import Trainer


def straightforward_step(G, D, opt_g, opt_d, cfg, x_unl, x_unl2, x_lab, y_lab):
    """The textbook improved-GAN step: three D passes, a G pass through D with D's grads computed."""
    z = torch.rand(x_unl.shape[0], cfg.model.z_dim)
    x_gen = G(z).detach()
    l_lab, _ = D(x_lab)
    l_unl, _ = D(x_unl)
    l_gen, _ = D(x_gen)
    loss_lab = F.cross_entropy(l_lab, y_lab)
    lse_u, lse_g = torch.logsumexp(l_unl, 1), torch.logsumexp(l_gen, 1)
    loss_unl = -0.5 * lse_u.mean() + 0.5 * F.softplus(lse_u).mean() + 0.5 * F.softplus(lse_g).mean()
    opt_d.zero_grad()
    (loss_lab + loss_unl).backward()
    opt_d.step()
    _, f_real = D(x_unl2)
    _, f_fake = D(G(torch.rand(x_unl.shape[0], cfg.model.z_dim)))
    diff = f_fake.mean(0) - f_real.detach().mean(0)
    loss_g = diff.abs().mean() if cfg.techniques.fm_norm == "l1" else (diff ** 2).mean()
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()


def measure_interleaved(fn_a, fn_b, steps: int, warmup: int = 3) -> tuple[float, float]:
    """Seconds for ``steps`` calls of each, alternating calls so load drift on a shared machine
    hits both sides equally."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    ta = tb = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        fn_a()
        t1 = time.perf_counter()
        fn_b()
        ta, tb = ta + t1 - t0, tb + time.perf_counter() - t1
    return ta, tb


def bench(preset: str, overrides: list[str], steps: int) -> dict:
    cfg = apply_overrides(get_preset(preset), overrides)
    b = cfg.data.batch_size
    shape = (b, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    x, x2, xl = torch.rand(shape), torch.rand(shape), torch.rand(shape)
    yl = torch.randint(0, cfg.data.num_classes, (b,))
    trainer = Trainer(cfg, init_batch=x, device="cpu")
    base = Trainer(cfg, init_batch=x, device="cpu")  # same architecture and initialisation
    t_igan, t_base = measure_interleaved(
        lambda: trainer.train_step(x, x2, xl, yl),
        lambda: straightforward_step(base.G, base.D, base.opt_g, base.opt_d, cfg, x, x2, xl, yl), steps)
    return {"igan_samples_per_s": round(steps * b / t_igan, 1), "baseline_samples_per_s": round(steps * b / t_base, 1),
            "ratio": round(t_base / t_igan, 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = {"benchmark": "step_throughput", "device": "cpu", "threads": args.threads, "steps": args.steps,
           "mnist": bench("mnist", [], args.steps),
           "cifar10": bench("cifar10", [], max(2, args.steps // 4))}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
