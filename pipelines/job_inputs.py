"""What a training job or search needs before any Ray work starts, checked on the driver: its shards
(sharding the embedded ``digits`` set on first use) and its scorer's weights. A missing or
mismatched input is a UserError (one line), not a job that fails hours later."""
from __future__ import annotations

from typing import Callable

from igan.config import Config
from pipelines import defaults
from pipelines.errors import UserError

SHARDED = ("digits", "mnist", "cifar10", "svhn", "imagenet")
TOY = ("ring8", "grid25")


def ensure_data(cfg: Config, data: str | None = None, log: Callable[[str], None] = print) -> str | None:
    """The shard root to train from (None for the in-memory toy sets). ``data`` (``--data``) or
    ``cfg.data.path``; without either, ``digits`` is sharded on first use into the cache folder
    (:func:`pipelines.defaults.digits_cache`) by the same code as ``igan shard``. UserError when
    the shards are missing or do not match the config."""
    from igan.data.manifest import ManifestError, split_manifest

    name = cfg.data.dataset
    root = data or cfg.data.path or None
    if name in TOY:
        if root:
            raise UserError(f"{name} is generated in memory; --data / data.path is not used with it")
        return None
    if root is None:
        if name != "digits":
            raise UserError(f"{name} needs shards: run `igan shard {name} --src RAW --out DIR`, then "
                            f"`igan train --preset {cfg.preset} --data DIR`")
        root = str(defaults.digits_cache())
        if not _has_split(root, "train") or not _has_split(root, "test"):
            from pipelines.shard import shard_dataset

            log(f"igan train: first use of digits: sharding it into {root}")
            shard_dataset("digits", root, engine="local", log=log)
    try:
        _, manifest = split_manifest(root, "train")
        if cfg.techniques.semi_supervised:  # the test role: reported at the end
            split_manifest(root, cfg.data.test_split)
    except (ManifestError, ValueError, OSError) as exc:
        raise UserError(f"no usable shards at {root}: {str(exc).splitlines()[0]}") from None
    check_manifest(cfg, manifest, root)
    return root


def ensure_scorer(cfg: Config, hint: str = "") -> str | None:
    """The Inception weight file the job's score will load (None when its scorer needs none),
    checked on the driver before any Ray work: a missing or wrong file is a UserError (one line:
    where the file goes, then ``hint``), not a job that trains for days without its metric."""
    from igan.evaluation import require_scorer
    from igan.metrics import InceptionWeightsInvalid, InceptionWeightsNotFound

    try:
        return require_scorer(cfg)
    except (InceptionWeightsNotFound, InceptionWeightsInvalid) as exc:
        raise UserError(f"{exc}; {hint}" if hint else str(exc)) from None


def _has_split(root: str, split: str) -> bool:
    from igan.data.storage import Folder

    return Folder(root).sub(split).exists("manifest.json")


def check_manifest(cfg: Config, m: dict, root: str) -> None:
    """UserError (one line) when the split manifest ``m`` under ``root`` does not fit ``cfg``'s data
    set, image size, channels or classes."""
    d = cfg.data
    problems = []
    if m.get("dataset") not in (d.dataset, None):
        problems.append(f"data set {m['dataset']!r}, config wants {d.dataset!r}")
    if list(m["image_size"]) != [d.image_size, d.image_size]:
        problems.append(f"image size {m['image_size']}, config wants {d.image_size} (data.image_size)")
    if int(m["channels"]) != d.channels:
        problems.append(f"{m['channels']} channels, config wants {d.channels} (data.channels)")
    if int(m["num_classes"]) != d.num_classes:
        problems.append(f"{m['num_classes']} classes, config wants {d.num_classes} (data.num_classes)")
    if problems:
        raise UserError(f"shards at {root} do not match the config: " + "; ".join(problems))
