"""25 Gaussians on a 5x5 grid (unsupervised toy): how many modes the generator covers.

The preset's R1 penalty (gamma 1) is what made it cover the modes on every seed (measurements:
benchmarks/RESULTS.md); the search varies its strength around that, with smoothing, D's learning
rate and G steps per D step. Minibatch discrimination stays off: on top of R1 it is too slow on a CPU.
"""
from ray import tune

from tune_spaces._common import smoothing

PRESET = "grid25"
METRIC, MODE = "val_modes_captured", "max"
TIED = {"optim.lr_g": "optim.lr_d"}  # G's learning rate follows D's
PBT_MUTABLE = ("optim.lr_d", "techniques.real_label", "techniques.r1_gamma")


def space() -> dict:
    return {
        "techniques.r1_gamma": tune.choice([0.0, 0.3, 1.0, 3.0, 10.0]),
        "techniques.real_label": smoothing((1.0, 0.95, 0.9, 0.8)),
        "optim.lr_d": tune.loguniform(1e-4, 1e-3),
        "optim.g_steps": tune.choice([1, 2, 3]),
    }
