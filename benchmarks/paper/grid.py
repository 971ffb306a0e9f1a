"""A paper table as ONE Ray Tune grid for igan's search (:func:`pipelines.tune.run_search`): the
table's rows (label counts, or presets as overlays of config values) times the seeds, each cell one
trial and one MLflow child run. The seed also draws the labeled subset (``data.label_seed`` follows
``train.seed``), as the paper's error bars are over labeled subsets. Each scale's settings are here."""
from __future__ import annotations

from types import SimpleNamespace

import tune_spaces
from benchmarks.paper.tables import Table
from igan.presets import get_preset

SCALES = ("smoke", "full")

#: Every smoke run: two short epochs, evaluated after each, a small validation hold-out and the
#: data-dependent initialisation on a few examples: a few seconds of training per trial.
SMOKE_COMMON = ["train.epochs=2", "train.steps_per_epoch=3", "eval.every=1", "eval.grid_size=4",
                "data.val_per_class=5", "techniques.wn_init_examples=50"]
_TINY_CONV = ["model.d_widths=[8,8]", "model.g_widths=[16,8,8]"]
#: Per table at smoke scale: tiny widths, and the scorer. The semi-supervised tables report the
#: classifier's error and need no sample score (``eval.scorer=none``); Table 3 is scored by a small
#: domain classifier trained on the smoke data (no Inception weights: not the paper's scale), whose
#: training time grows with the train split: 10 labels per class instead of 400 keep that set small.
SMOKE = {
    "mnist": ["model.d_widths=[64,32,32]", "model.g_widths=[32]", "eval.scorer=none"],
    "cifar10": _TINY_CONV + ["eval.scorer=none"],
    "svhn": _TINY_CONV + ["eval.scorer=none"],
    "cifar10_is": _TINY_CONV + ["techniques.mbd_kernels=8", "techniques.vbn_reference_size=16",
                                "eval.scorer=domain", "eval.num_samples=200", "eval.final_num_samples=0", "eval.splits=2",
                                "data.labels_per_class=10"],
}


def scale_overrides(table: Table, scale: str) -> list[str]:
    """The ``--set`` overrides of ``scale`` for ``table``: none at ``full`` (the presets are the
    paper's recipes), short runs of tiny models at ``smoke``."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}; got {scale!r}")
    return [] if scale == "full" else SMOKE_COMMON + SMOKE[table.name]


def preset_overlay(base: str, name: str) -> dict:
    """``{"section.key": value}`` where preset ``name`` differs from preset ``base`` (``preset``
    included): the one grid cell's change that makes a ``base`` run a ``name`` run."""
    ours, theirs = get_preset(base).flat(), get_preset(name).flat()
    return {k: v for k, v in theirs.items() if v != ours[k]}


def table_space(table: Table, seeds: int) -> SimpleNamespace:
    """The table's search space as an object with a space module's names (see :mod:`tune_spaces`):
    ``tune.grid_search`` over the rows' values and over ``train.seed`` in ``0..seeds-1``."""
    from ray import tune

    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    overlays = {r.value: preset_overlay(table.preset, r.value) for r in table.rows} \
        if table.key == tune_spaces.OVERLAY else {}

    def space() -> dict:
        return {table.key: tune.grid_search([r.value for r in table.rows]),
                "train.seed": tune.grid_search(list(range(seeds)))}

    return SimpleNamespace(PRESET=table.preset, METRIC=table.val_metric, MODE=table.mode, OVERLAYS=overlays,
                           TIED={"data.label_seed": "train.seed"}, PBT_MUTABLE=(), space=space)


def grid_options(table: Table, scale: str, seeds: int, overrides: list[str] = (), **run):
    """:class:`pipelines.tune.TuneOptions` running ``table`` at ``scale`` over ``seeds`` seeds as one
    grid (``num_samples=1``: the grid is the trials; FIFO: no trial is stopped early; no model
    registered). ``overrides`` (``--set``) come after the scale's; ``run`` sets the other options
    (data, storage, tracking URI, resources, ...)."""
    from pipelines.tune import TuneOptions

    return TuneOptions(space=f"paper-{table.name}", space_module=table_space(table, seeds), num_samples=1,
                       scheduler="fifo", overrides=scale_overrides(table, scale) + list(overrides),
                       register=False, **run)
