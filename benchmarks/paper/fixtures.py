"""Small synthetic data sets in the real on-disk formats (random pixels, random labels: the builders
of ``tests/helpers/fixtures_formats.py``), sharded by ``igan shard``'s local engine: what a smoke
run trains on where the real MNIST, CIFAR-10 and SVHN files are absent. Numbers measured on them say
that the pipeline runs, nothing about how well a model learns."""
from __future__ import annotations

import os
import sys
from pathlib import Path

#: Raw fixture sizes per data set: enough examples per class for the largest row's labeled subset
#: plus a smoke-scale validation hold-out (random labels: ~10 % of the images per class).
SIZES = {
    "mnist": {"n_train": 1500, "n_test": 500},              # rows up to 20 labels per class
    "svhn": {"n_train": 3000, "n_test": 500},               # up to 200 per class
    "cifar10": {"per_batch": 2000, "n_test": 500},          # 10,000 images: up to 800 per class
}
#: Table 3 at smoke scale takes 10 labels per class (:data:`benchmarks.paper.grid.SMOKE`): a small
#: set, since its domain scorer trains on the whole train split (30 passes over a set this small).
TABLE3_CIFAR = {"per_batch": 60, "n_test": 200}


def _builders():
    """The format builders of the test helpers (tests/ is not a package: put it on the path)."""
    tests = Path(__file__).resolve().parents[2] / "tests"
    if str(tests) not in sys.path:
        sys.path.insert(0, str(tests))
    from helpers import fixtures_formats

    return {"mnist": fixtures_formats.make_mnist, "svhn": fixtures_formats.make_svhn,
            "cifar10": fixtures_formats.make_cifar10}


def synthetic_shards(dataset: str, work: str, sizes: dict | None = None) -> dict:
    """Write a raw ``dataset`` fixture under ``work/raw`` and shard it into ``work/shards``; returns
    ``{"root": shard root, "train": n, "test": n}``."""
    from pipelines.shard import shard_dataset

    sizes = dict(sizes or SIZES[dataset])
    raw, root = os.path.join(work, "raw", dataset), os.path.join(work, "shards", dataset)
    expected = _builders()[dataset](raw, **sizes)
    src = expected.get("path", raw)  # CIFAR-10: the cifar-10-batches-py folder
    shard_dataset(dataset, root, src=src, engine="local", log=lambda msg: None)
    return {"root": root, "train": int(len(expected["train"][1])), "test": int(len(expected["test"][1]))}
