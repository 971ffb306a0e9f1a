"""Eight Gaussians on a ring (unsupervised toy): how many modes the generator covers."""
from ray import tune

from tune_spaces._common import mbd, smoothing

PRESET = "ring8"
METRIC, MODE = "val_modes_captured", "max"
TIED = {"optim.lr_g": "optim.lr_d"}  # G's learning rate follows D's
PBT_MUTABLE = ("optim.lr_d", "techniques.real_label")


def space() -> dict:
    return {
        "techniques.real_label": smoothing(),
        **mbd(kernels=(5, 100), dim=(3, 20)),
        "techniques.generator_loss": tune.choice(["nonsaturating", "minimax"]),
        "optim.lr_d": tune.loguniform(1e-4, 3e-3),
    }
