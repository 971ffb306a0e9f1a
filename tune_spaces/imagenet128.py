"""ImageNet 128x128 (every image labeled): sample quality, measured by the Inception score."""
from ray import tune

from tune_spaces._common import mbd, smoothing

PRESET = "imagenet128"
METRIC, MODE = "val_inception_score", "max"
TIED = {"optim.lr_g": "optim.lr_d"}  # G's learning rate follows D's
PBT_MUTABLE = ("optim.lr_d", "techniques.real_label", "techniques.generator_label")


def space() -> dict:
    return {
        "techniques.real_label": smoothing((1.0, 0.9, 0.8, 0.75, 0.7)),
        "techniques.generator_label": tune.choice([1.0, 0.5, 0.375]),
        **mbd(kernels=(100, 300), dim=(20, 50)),
        "techniques.virtual_batch_norm": tune.choice([True, False]),
        "optim.lr_d": tune.loguniform(1e-4, 1e-3),
    }
