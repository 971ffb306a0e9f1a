"""Named presets reproducing the recipes of Salimans et al. 2016, "Improved Techniques for Training
GANs" (sec. 6), with the authors' code's behaviour as the default where the two differ.

Each preset is a nested dict of overrides applied to the default :class:`~igan.config.Config`;
:func:`get_preset` returns a validated Config.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from igan.config import Config, ConfigError, parse_overrides, read_yaml, with_values

_MNIST_MLP = {
    "model": {"name": "mnist_mlp", "z_dim": 100, "d_widths": [1000, 500, 250, 250, 250],
              "g_widths": [500, 500], "d_input_noise": 0.3, "d_hidden_noise": 0.5},
    "techniques": {"semi_supervised": True, "feature_matching": True, "fm_norm": "l2",
                   "weight_norm": True},
    "optim": {"lr_d": 3e-3, "lr_g": 3e-3, "beta1": 0.5},
}

_CIFAR_CONV = {
    "model": {"name": "cifar_conv", "z_dim": 100, "d_widths": [96, 192], "g_widths": [512, 256, 128],
              "d_input_noise": 0.0, "d_hidden_noise": 0.0, "d_input_dropout": 0.2, "d_dropout": 0.5},
    "techniques": {"semi_supervised": True, "feature_matching": True, "fm_norm": "l1",
                   "weight_norm": True, "ema_rate": 1e-4},
    # lr = 3e-4 * min(3 - epoch/400, 1): constant until epoch 800, then linear to 0 at 1200.
    "optim": {"lr_d": 3e-4, "lr_g": 3e-4, "beta1": 0.5, "decay_start_epoch": 800},
    "data": {"image_size": 32, "channels": 3, "num_classes": 10, "pixel_range": "authors",
             "batch_size": 100},
    "train": {"epochs": 1200},
    # the paper's Inception score: the 2015 graph when its weights are found, 50,000 samples at the end
    "eval": {"scorer": "auto", "final_num_samples": 50000},
}

PRESETS: dict[str, dict] = {
    "digits": _MNIST_MLP | {
        "data": {"dataset": "digits", "image_size": 8, "channels": 1, "num_classes": 10,
                 "labels_per_class": 5, "val_per_class": 20, "pixel_range": "unit", "batch_size": 100},
        "train": {"epochs": 150},
        "techniques": _MNIST_MLP["techniques"] | {"ema_rate": 1e-2},
        # Tuned for the 1,438-image train split (benchmarks/ssl_digits.py): less noise and a lower
        # learning rate than the 60k-image MNIST recipe keep D from overpowering G.
        "model": _MNIST_MLP["model"] | {"d_input_noise": 0.2, "d_hidden_noise": 0.3},
        "optim": _MNIST_MLP["optim"] | {"lr_d": 1e-3, "lr_g": 1e-3},
        "eval": {"every": 25, "num_samples": 2000, "scorer": "domain"},
    },
    "mnist": _MNIST_MLP | {
        "data": {"dataset": "mnist", "image_size": 28, "channels": 1, "num_classes": 10,
                 "labels_per_class": 10, "val_per_class": 100, "pixel_range": "unit", "batch_size": 100},
        "train": {"epochs": 300},
        "techniques": _MNIST_MLP["techniques"] | {"ema_rate": 1e-4},  # the authors' evaluation EMA
        "eval": {"every": 10, "scorer": "domain"},
    },
    "cifar10": _CIFAR_CONV | {
        "data": _CIFAR_CONV["data"] | {"dataset": "cifar10", "labels_per_class": 400, "val_per_class": 500},
    },
    "svhn": _CIFAR_CONV | {
        "model": _CIFAR_CONV["model"] | {"d_widths": [64, 128]},
        "data": _CIFAR_CONV["data"] | {"dataset": "svhn", "labels_per_class": 100, "val_per_class": 100},
        "optim": _CIFAR_CONV["optim"] | {"decay_start_epoch": 600},
        "train": {"epochs": 900},
        "eval": {"scorer": "domain"},
    },
    # The authors' ImageNet code (igan.models.imagenet_authors; model.name=imagenet_dcgan is igan's
    # earlier DCGAN stand-in): their df_dim = gf_dim = 64, z of 8,192 dims, 16 images per GPU and a
    # VBN reference batch of 16.
    "imagenet128": {
        "model": {"name": "imagenet_authors", "z_dim": 8192,
                  "d_widths": [64, 128, 256, 256, 256, 512, 512, 2560],
                  "g_widths": [512, 256, 128, 64, 64, 64], "g_noise_channels": [64, 64, 32, 16, 8, 8],
                  "d_input_noise": 0.1, "d_hidden_noise": 0.0},
        # D has 1000 class logits plus the generated logit; every image is labeled.
        "techniques": {"semi_supervised": True, "feature_matching": False, "generator_loss": "nonsaturating",
                       "minibatch_discrimination": True, "mbd_kernels": 300, "mbd_dim": 50,
                       "real_label": 0.75, "generator_label": 0.375, "virtual_batch_norm": True,
                       "vbn_reference_size": 16, "weight_norm": False, "eval_ema": False},
        "optim": {"lr_d": 4e-4, "lr_g": 4e-4, "beta1": 0.5},
        "data": {"dataset": "imagenet", "image_size": 128, "channels": 3, "num_classes": 1000,
                 "labels_per_class": -1, "val_per_class": 10, "test_split": "val",
                 "pixel_range": "symmetric", "batch_size": 16},
        "train": {"epochs": 100, "checkpoint_every": 1},
        "eval": {"every": 1, "scorer": "auto", "final_num_samples": 50000},
    },
}

_TOY = {
    "model": {"name": "toy_mlp", "z_dim": 2, "d_widths": [200, 200], "g_widths": [400, 400, 400],
              "d_input_noise": 0.0, "d_hidden_noise": 0.0},
    "techniques": {"semi_supervised": False, "feature_matching": False, "generator_loss": "nonsaturating",
                   "minibatch_discrimination": True, "mbd_kernels": 50, "mbd_dim": 5,
                   "real_label": 0.9, "weight_norm": False, "eval_ema": False},
    # lr 2e-4, one-sided smoothing 0.9 and a linear decay to 0 over the second half: at lr 1e-3 without
    # smoothing the modes found oscillate from epoch to epoch. Nets of PacGAN's grid sizes, one layer
    # fewer each. Measurements: benchmarks/RESULTS.md (2026-11-26, ring8 / grid25 presets).
    "optim": {"lr_d": 2e-4, "lr_g": 2e-4, "beta1": 0.5, "decay_start_epoch": 15},
    "train": {"epochs": 30, "checkpoint_every": 5},
    "eval": {"every": 2, "num_samples": 2500, "scorer": "none"},
}
PRESETS["ring8"] = _TOY | {"data": {"dataset": "ring8", "channels": 2, "num_classes": 8, "labels_per_class": 0,
                                    "val_per_class": 0, "image_size": 1, "batch_size": 100}}
# grid25: R1 penalty (gamma 1), since without it G leaves modes of the 25-Gaussian grid empty on
# some seeds; MBD off, since on top of R1 it is too slow on a CPU. Measurements: benchmarks/RESULTS.md.
PRESETS["grid25"] = _TOY | {"data": {"dataset": "grid25", "channels": 2, "num_classes": 25,
                                     "labels_per_class": 0, "val_per_class": 0, "image_size": 1, "batch_size": 100},
                            "techniques": _TOY["techniques"] | {"minibatch_discrimination": False, "r1_gamma": 1.0},
                            "optim": _TOY["optim"] | {"g_steps": 2, "decay_start_epoch": 30},
                            "train": _TOY["train"] | {"epochs": 120}}


# Table 3 (CIFAR-10 sample quality): the minibatch-discrimination model of the authors' CIFAR-10 code
# (Gaussian noise 0.2 on D's input instead of input dropout, MBD with B=100, C=5 after the global pool,
# G loss -mean(softplus(lse(l_gen))) without feature matching, 3 G steps per D step, 400 labels per
# class) plus what the paper's best model adds: virtual batch norm in G (reference batch = one
# minibatch; the paper gives no size) and one-sided label smoothing (0.9; the paper gives no value for
# CIFAR-10). The score is the paper's: 50,000 samples in 10 splits, so evaluations are spaced out.
PRESETS["cifar10_mbd"] = _CIFAR_CONV | {
    "model": _CIFAR_CONV["model"] | {"d_input_noise": 0.2, "d_input_dropout": 0.0},
    "techniques": _CIFAR_CONV["techniques"] | {
        "feature_matching": False, "generator_loss": "minimax", "minibatch_discrimination": True,
        "mbd_kernels": 100, "mbd_dim": 5, "virtual_batch_norm": True, "vbn_reference_size": 100,
        "real_label": 0.9},
    "optim": _CIFAR_CONV["optim"] | {"g_steps": 3},
    "data": PRESETS["cifar10"]["data"],
    "eval": {"scorer": "auto", "num_samples": 50000, "splits": 10, "every": 50},
}

#: Table 3's ablation rows: what each changes in ``cifar10_mbd``. Each removes one technique;
#: "labels" is two keys (the K+1 classifier and its labeled subset), and -L+HA removes the labels and
#: adds historical averaging, as the paper's row does by definition.
TABLE3_ABLATIONS: dict[str, dict] = {
    "cifar10_mbd_no_vbn": {"techniques": {"virtual_batch_norm": False}},       # -VBN+BN
    "cifar10_mbd_no_l_ha": {"techniques": {"semi_supervised": False, "historical_averaging": True},
                            "data": {"labels_per_class": 0}},                  # -L+HA
    "cifar10_mbd_no_ls": {"techniques": {"real_label": 1.0}},                  # -LS
    "cifar10_mbd_no_l": {"techniques": {"semi_supervised": False}, "data": {"labels_per_class": 0}},  # -L
    "cifar10_mbd_no_mbf": {"techniques": {"minibatch_discrimination": False}},  # -MBF
}


def _changed(preset: dict, changes: dict) -> dict:
    """A new preset dict: ``preset`` with each section of ``changes`` merged into its section."""
    return preset | {section: preset.get(section, {}) | values for section, values in changes.items()}


PRESETS.update({name: _changed(PRESETS["cifar10_mbd"], changes) for name, changes in TABLE3_ABLATIONS.items()})


def preset_names() -> list[str]:
    """Names accepted by :func:`get_preset`, in documentation order."""
    return list(PRESETS)


def get_preset(name: str) -> Config:
    """The validated Config of preset ``name``; ConfigError naming the allowed presets otherwise."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; allowed: {', '.join(PRESETS)}")
    return Config.from_dict({"preset": name, **PRESETS[name]})


def load_yaml(path: str | Path, base: Config | None = None) -> Config:
    """Config from a YAML file of sections over ``base``; without ``base``, ``preset: NAME`` in the
    file starts from that preset (else from the defaults)."""
    raw = read_yaml(path)
    if base is None and "preset" in raw:
        base = get_preset(str(raw["preset"]))
    return Config.from_dict(raw, base=base)


def build_config(preset: str | None = None, *, config_file: str | Path | None = None, base: Config | None = None,
                 values: Mapping[str, Any] | None = None, overrides: Sequence[str] = (),
                 default_preset: str = "digits") -> Config:
    """The one way a job's Config is made (``igan train``, ``igan tune``, a YAML file): ``base``,
    else the YAML file over ``preset`` (the file may name its own), else the preset (default
    ``default_preset``); then the typed ``values`` (``{"section.key": value}``), then the ``--set``
    ``overrides`` (strings, applied last: what the user typed wins). ConfigError on a bad key or value."""
    if base is not None:
        cfg = base
    elif config_file:
        cfg = load_yaml(config_file, base=get_preset(preset) if preset else None)
    else:
        cfg = get_preset(preset or default_preset)
    return with_values(cfg, {**dict(values or {}), **parse_overrides(overrides)})
