"""The one typed configuration object that flows from the CLI into the training loop.

Sections: ``data``, ``model``, ``techniques``, ``optim``, ``train``, ``eval``. Every field declares
its allowed values (``choices``) or range (``low``/``high``); :func:`Config.from_dict`,
:func:`load_yaml` and :func:`apply_overrides` reject unknown keys and bad values with a
:class:`ConfigError` that names the key and what is allowed.
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration key is unknown or its value is not allowed. The message names both."""


def _f(default: Any, *, choices: tuple | None = None, low: float | None = None,
       high: float | None = None, help: str = "") -> Any:
    """A dataclass field carrying its validation rule and a one-line description."""
    meta = {"choices": choices, "low": low, "high": high, "help": help}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


DATASETS = ("digits", "mnist", "cifar10", "svhn", "imagenet", "ring8", "grid25")
MODELS = ("mnist_mlp", "cifar_conv", "imagenet_dcgan", "imagenet_authors", "toy_mlp")


@dataclass
class DataConfig:
    dataset: str = _f("digits", choices=DATASETS, help="which data set")
    path: str = _f("", help="shard root (a folder or URI holding <split>/manifest.json); empty: "
                            "the embedded or cached default")
    image_size: int = _f(8, low=1, high=1024, help="square image side in pixels (toy sets: unused)")
    channels: int = _f(1, choices=(1, 2, 3), help="image channels (toy sets: 2 coordinates)")
    num_classes: int = _f(10, low=1, high=100000, help="number of real classes K")
    labels_per_class: int = _f(5, low=-1, high=1000000,
                               help="labeled examples per class for semi-supervised training; "
                                    "0: none (unsupervised GAN), -1: every example labeled")
    label_seed: int = _f(0, low=0, help="seed of the balanced labeled-subset draw")
    val_per_class: int = _f(10, low=0, high=1000000,
                            help="validation hold-out carved out of the train split: examples per class, chosen "
                                 "by seeded key rank, disjoint from the labeled subset (0: no hold-out)")
    val_seed: int = _f(0, low=0, help="seed of the validation hold-out (kept apart from label_seed, so trials "
                                      "that vary the labels are still compared on one validation set)")
    test_split: str = _f("test", help="the shard split reported once at the end and never used to choose "
                                      "(ImageNet: val)")
    pixel_range: str = _f("unit", choices=("unit", "symmetric", "authors"),
                          help="unit: [0,1]; symmetric: [-1,1]; authors: (x-127.5)/128")
    batch_size: int = _f(100, low=1, high=65536, help="per-worker minibatch size")
    shuffle_buffer: int = _f(2000, low=0, help="streaming shuffle buffer (samples)")
    loader_workers: int = _f(0, low=0, high=64, help="DataLoader worker processes per train worker")
    decode_threads: int = _f(2, low=1, high=64, help="threads decoding each streamed batch (per loader worker)")
    verify_shards: bool = _f(True, help="check every shard's sha256 against its manifest each time it is read "
                                        "(sample counts, labels and names are checked either way)")


@dataclass
class ModelConfig:
    name: str = _f("mnist_mlp", choices=MODELS, help="generator/discriminator pair")
    z_dim: int = _f(100, low=1, high=8192, help="latent dimension; z ~ U(0,1) (imagenet_authors maps it to U(-1,1))")
    d_widths: list = _f([1000, 500, 250, 250, 250],
                        help="discriminator widths: hidden units (MLPs) or conv channels (conv nets)")
    g_widths: list = _f([500, 500], help="generator widths: hidden units (MLPs) or channels")
    g_noise_channels: list = _f([], low=0, high=4096,
                                help="imagenet_authors: U(-1,1) noise channels appended after each generator layer, "
                                     "one entry per g_widths entry ([]: none)")
    d_input_noise: float = _f(0.3, low=0.0, high=10.0, help="std of Gaussian noise on D's input")
    d_hidden_noise: float = _f(0.5, low=0.0, high=10.0, help="std of Gaussian noise after D's hidden layers (MLP)")
    d_input_dropout: float = _f(0.0, low=0.0, high=0.99, help="dropout on D's input (conv nets)")
    d_dropout: float = _f(0.0, low=0.0, high=0.99, help="dropout between D's conv blocks")


@dataclass
class TechniquesConfig:
    semi_supervised: bool = _f(True, help="K+1-way discriminator with the fake logit fixed at 0")
    feature_matching: bool = _f(True, help="generator matches mean D features of real data")
    fm_norm: str = _f("l2", choices=("l2", "l1"), help="feature-matching distance")
    fm_layer: int = _f(-1, low=-16, high=16, help="index of the D hidden layer to match (-1: last)")
    generator_loss: str = _f("nonsaturating", choices=("nonsaturating", "minimax"),
                             help="adversarial G loss when feature matching is off")
    minibatch_discrimination: bool = _f(False, help="minibatch-discrimination layer in D")
    mbd_kernels: int = _f(100, low=1, high=4096, help="minibatch-discrimination kernels B")
    mbd_dim: int = _f(5, low=1, high=1024, help="minibatch-discrimination dimension per kernel C")
    mbd_layer: int = _f(-1, low=-16, high=16,
                        help="index of the D hidden layer that feeds minibatch discrimination (-1: the last; "
                             "other values: MLP discriminators only)")
    historical_averaging: bool = _f(False, help="penalise distance to the running mean of past parameters")
    ha_weight: float = _f(1e-3, low=0.0, high=1e6, help="historical-averaging penalty weight")
    r1_gamma: float = _f(0.0, low=0.0, high=1e6,
                         help="R1 gradient penalty gamma/2 * E||grad_x D(x_real)||^2 on D (0: off)")
    real_label: float = _f(1.0, low=0.5, high=1.0, help="one-sided smoothing: D's target for real data (1.0: off)")
    generator_label: float = _f(1.0, low=0.0, high=1.0, help="G's target in the non-saturating loss")
    virtual_batch_norm: bool = _f(False, help="virtual batch norm in G instead of batch norm")
    vbn_reference_size: int = _f(64, low=1, high=4096, help="fixed reference batch size for VBN")
    weight_norm: bool = _f(True, help="weight normalisation with data-dependent initialisation")
    wn_init_examples: int = _f(500, low=0, high=100000, help="examples for the data-dependent init (0: skip)")
    eval_ema: bool = _f(True, help="evaluate the classifier with an EMA of D's parameters")
    ema_rate: float = _f(1e-4, low=0.0, high=1.0, help="EMA update rate per step (bias-corrected)")


@dataclass
class OptimConfig:
    lr_d: float = _f(3e-3, low=0.0, high=10.0, help="discriminator Adam learning rate")
    lr_g: float = _f(3e-3, low=0.0, high=10.0, help="generator Adam learning rate")
    beta1: float = _f(0.5, low=0.0, high=0.9999, help="Adam beta1")
    beta2: float = _f(0.999, low=0.0, high=0.99999, help="Adam beta2")
    decay_start_epoch: int = _f(-1, low=-1, help="epoch where a linear decay to 0 at the last epoch starts (-1: constant)")
    g_steps: int = _f(1, low=1, high=16, help="generator steps per discriminator step")


@dataclass
class TrainConfig:
    epochs: int = _f(300, low=1, high=100000, help="passes over the unlabeled data")
    seed: int = _f(0, low=0, help="seed of parameters, noise and data order")
    device: str = _f("auto", choices=("auto", "cpu", "cuda"), help="where to train")
    amp: str = _f("off", choices=("off", "bf16"), help="autocast precision on CUDA")
    channels_last: bool = _f(False, help="channels_last memory format on CUDA")
    log_every: int = _f(50, low=1, help="steps between progress lines")
    checkpoint_every: int = _f(10, low=1, help="epochs between checkpoints")
    steps_per_epoch: int = _f(0, low=0, help="cap on steps per epoch (0: one pass over the data)")


@dataclass
class EvalConfig:
    every: int = _f(10, low=1, help="epochs between evaluations")
    num_samples: int = _f(5000, low=10, high=1000000, help="generated samples for each periodic (validation) score")
    final_num_samples: int = _f(0, low=0, high=1000000,
                                help="generated samples for the test score at the end (the paper: 50000 in 10 "
                                     "splits); 0: eval.num_samples")
    splits: int = _f(10, low=1, high=100, help="contiguous splits for the Inception score")
    scorer: str = _f("auto", choices=("auto", "inception_tf2015", "inception", "domain", "none"),
                     help="inception_tf2015: Inception-v3 of the 2015 TensorFlow graph (the paper's scores); "
                          "inception: torchvision's; domain: a classifier of the data set; auto: the 2015 graph "
                          "for CIFAR/ImageNet when its weights are found, else torchvision's; toy sets none; "
                          "a domain classifier otherwise")
    grid_size: int = _f(10, low=1, high=32, help="sample grid side (grid_size**2 images)")
    generator_batch_stats: bool = _f(True, help="sample with G's batch norm on each sampling batch's statistics "
                                                "(batches of data.batch_size, the authors' sampling); false: on "
                                                "its running averages")


#: Models whose discriminator can feed minibatch discrimination from any hidden layer.
MLP_DISCRIMINATORS = ("mnist_mlp", "toy_mlp")

#: How many feature layers each model's discriminator offers to ``techniques.fm_layer``, from
#: ``model.d_widths``: known here so a bad index fails before a Ray job starts, not in each worker
#: (tests/unit/igan/test_models.py checks the table against the built discriminators).
FEATURE_LAYERS = {"mnist_mlp": len, "toy_mlp": len, "imagenet_dcgan": len, "imagenet_authors": len,
                  "cifar_conv": lambda widths: 3}  # the two stage means and the global pool

SECTIONS = {
    "data": DataConfig, "model": ModelConfig, "techniques": TechniquesConfig,
    "optim": OptimConfig, "train": TrainConfig, "eval": EvalConfig,
}


@dataclass
class Config:
    preset: str = "digits"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    techniques: TechniquesConfig = field(default_factory=TechniquesConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    # -- conversion -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Nested plain-Python dict (YAML/JSON-serialisable)."""
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """``{"section.key": value}`` for every field, lists kept as lists; the MLflow params."""
        out: dict[str, Any] = {"preset": self.preset}
        for name in SECTIONS:
            for key, value in dataclasses.asdict(getattr(self, name)).items():
                out[f"{name}.{key}"] = value
        return out

    @classmethod
    def from_dict(cls, raw: dict, base: "Config | None" = None) -> "Config":
        """Config from a nested dict, overriding ``base`` (default: a fresh default Config)."""
        cfg = copy.deepcopy(base) if base is not None else cls()
        if not isinstance(raw, dict):
            raise ConfigError(f"a config must be a mapping of sections, got {type(raw).__name__}")
        for section, values in raw.items():
            if section == "preset":
                cfg.preset = str(values)
                continue
            if section not in SECTIONS:
                raise ConfigError(f"unknown config section '{section}'; allowed: preset, {', '.join(SECTIONS)}")
            if not isinstance(values, dict):
                raise ConfigError(f"config section '{section}' must be a mapping")
            for key, value in values.items():
                _set(cfg, f"{section}.{key}", value)
        validate(cfg)
        return cfg


def _field_of(section_cls: type, key: str, dotted: str) -> dataclasses.Field:
    fields = {f.name: f for f in dataclasses.fields(section_cls)}
    if key not in fields:
        raise ConfigError(f"unknown config key '{dotted}'; allowed in '{dotted.split('.')[0]}': "
                          f"{', '.join(fields)}")
    return fields[key]


def _field_at(dotted: str) -> tuple[str, dataclasses.Field]:
    """``(section, field)`` of the config key ``dotted`` ("section.key"); ConfigError otherwise."""
    if dotted.count(".") != 1:
        raise ConfigError(f"config key '{dotted}' must look like section.key; sections: {', '.join(SECTIONS)}")
    section, key = dotted.split(".")
    if section not in SECTIONS:
        raise ConfigError(f"unknown config section '{section}' in '{dotted}'; allowed: {', '.join(SECTIONS)}")
    return section, _field_of(SECTIONS[section], key, dotted)


def bounds(dotted: str) -> tuple[float | None, float | None]:
    """``(low, high)`` allowed for the numeric config key ``dotted`` (``None``: unbounded on that side)."""
    meta = _field_at(dotted)[1].metadata
    return meta.get("low"), meta.get("high")


def _coerce(value: Any, typ: Any, dotted: str) -> Any:
    """Convert ``value`` (possibly a string from --set) to the field's declared type."""
    typ = {"bool": bool, "int": int, "float": float, "str": str, "list": list}.get(typ, typ)
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
                return False
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is list:
            if isinstance(value, str):
                import yaml
                value = yaml.safe_load(value if value.startswith("[") else f"[{value}]")
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return [int(v) for v in value]
        return str(value)
    except (TypeError, ValueError):
        name = getattr(typ, "__name__", str(typ))
        raise ConfigError(f"config key '{dotted}' must be of type {name}, got {value!r}") from None


def _set(cfg: Config, dotted: str, value: Any) -> None:
    if dotted == "preset":
        cfg.preset = str(value)
        return
    section, f = _field_at(dotted)
    setattr(getattr(cfg, section), f.name, _coerce(value, f.type, dotted))


def _check_value(dotted: str, value: Any, meta: typing.Mapping) -> None:
    choices, low, high = meta.get("choices"), meta.get("low"), meta.get("high")
    if choices is not None and value not in choices:
        raise ConfigError(f"config key '{dotted}' = {value!r} is not allowed; allowed: "
                          f"{', '.join(map(str, choices))}")
    values = value if isinstance(value, list) else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if (low is not None and v < low) or (high is not None and v > high):
            lo = "-inf" if low is None else low
            hi = "inf" if high is None else high
            raise ConfigError(f"config key '{dotted}' = {value!r} is out of range; allowed: [{lo}, {hi}]")


def check_layer_index(key: str, index: int, count: int, kind: str, owner: str = "this discriminator") -> None:
    """ConfigError naming ``techniques.<key>`` when ``index`` (Python indexing) is outside ``count``
    layers of ``owner``."""
    if not -count <= index < count:
        raise ConfigError(f"config key techniques.{key}={index} is out of range: {owner} has {count} {kind} "
                          f"layers (allowed: {-count}..{count - 1})")


def validate(cfg: Config) -> Config:
    """Check every field against its rule and cross-field constraints; returns ``cfg``."""
    for section in SECTIONS:
        obj = getattr(cfg, section)
        for f in dataclasses.fields(obj):
            _check_value(f"{section}.{f.name}", getattr(obj, f.name), f.metadata)
    if cfg.model.name == "toy_mlp" and cfg.techniques.semi_supervised:
        raise ConfigError("config key 'techniques.semi_supervised' must be false for model.name=toy_mlp")
    mbd_layer, n_hidden = cfg.techniques.mbd_layer, len(cfg.model.d_widths)
    if mbd_layer != -1 and cfg.model.name not in MLP_DISCRIMINATORS:
        raise ConfigError(f"config key 'techniques.mbd_layer' must be -1 for model.name={cfg.model.name} "
                          f"(other layers: {', '.join(MLP_DISCRIMINATORS)})")
    if cfg.model.name in MLP_DISCRIMINATORS and n_hidden:
        # caught here, before a Ray job starts, rather than when each worker builds D
        check_layer_index("mbd_layer", mbd_layer, n_hidden, "hidden", owner="model.d_widths")
    if cfg.model.name in FEATURE_LAYERS and n_hidden:
        check_layer_index("fm_layer", cfg.techniques.fm_layer, FEATURE_LAYERS[cfg.model.name](cfg.model.d_widths),
                          "feature", owner=f"the {cfg.model.name} discriminator")
    if cfg.techniques.semi_supervised and cfg.data.labels_per_class == 0:
        raise ConfigError("config key 'data.labels_per_class' must be -1 or >= 1 when "
                          "techniques.semi_supervised is true")
    if not cfg.data.test_split or "/" in cfg.data.test_split or cfg.data.test_split in ("train", ".", ".."):
        raise ConfigError(f"config key 'data.test_split' = {cfg.data.test_split!r} must name a split folder "
                          "other than train (e.g. test, val)")
    if not cfg.model.d_widths or not cfg.model.g_widths:
        raise ConfigError("config keys 'model.d_widths' and 'model.g_widths' must be non-empty lists")
    return cfg


def with_values(cfg: Config, values: typing.Mapping[str, Any]) -> Config:
    """A copy of ``cfg`` with ``{"section.key": value}`` set (typed values, e.g. a Tune sample; a
    string is parsed as ``--set`` parses it), validated. ConfigError on an unknown key or a bad value."""
    out = copy.deepcopy(cfg)
    for key, value in values.items():
        _set(out, key.strip(), value.item() if hasattr(value, "item") else value)  # NumPy scalars
    return validate(out)


def parse_overrides(overrides: typing.Iterable[str]) -> dict[str, str]:
    """``["section.key=value", ...]`` (the CLI's ``--set``) as ``{"section.key": "value"}``, in order."""
    out: dict[str, str] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects section.key=value, got '{item}'")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``["section.key=value", ...]`` (the CLI's ``--set``) to a copy of ``cfg``."""
    return with_values(cfg, parse_overrides(overrides))


def read_yaml(path: str | Path) -> dict:
    """The sections of a YAML config file as a dict (not yet a Config: ``preset:`` in it names the
    preset to start from, see :func:`igan.presets.build_config`). ConfigError, one line, when the
    file is missing or not YAML."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must be a mapping of sections, got {type(raw).__name__}")
    return raw


def dump_yaml(cfg: Config) -> str:
    """The config as YAML text that :func:`igan.presets.load_yaml` reads back to an equal Config."""
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
