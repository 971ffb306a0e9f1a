"""Search spaces: every module loads, names real config keys, and its samples make valid Configs;
--set fixes a varied key; label counts change the labeled subset deterministically."""
from __future__ import annotations

import numpy as np
import pytest

import tune_spaces
from igan.config import ConfigError
from pipelines.errors import UserError
from pipelines.tune import TuneOptions
from pipelines.tune.search import clamp_to_bounds, pbt_mutations, resolve_search, trial_config

SPACES = ("digits", "mnist", "cifar10", "svhn", "imagenet128", "ring8", "grid25")


def test_every_preset_has_a_space():
    assert set(SPACES) <= set(tune_spaces.available())


def test_unknown_space_names_the_available_ones():
    with pytest.raises(ValueError, match="available: .*digits"):
        tune_spaces.load_space("nope")
    with pytest.raises(UserError, match="unknown tune space"):
        resolve_search(TuneOptions(space="nope"))


@pytest.mark.parametrize("name", SPACES)
def test_samples_are_valid_configs(name):
    module = tune_spaces.load_space(name)
    assert module.MODE in ("min", "max")
    search, space = resolve_search(TuneOptions(space=name))
    rng = np.random.default_rng(0)
    for _ in range(5):
        sampled = {k: d.sample(random_state=rng) for k, d in space.items()}
        cfg = trial_config(search.base, sampled, search.keys, search.tied)
        flat = cfg.flat()
        for k in search.keys:
            want = sampled[k].item() if hasattr(sampled[k], "item") else sampled[k]
            assert flat[k] == pytest.approx(want) if isinstance(want, float) else flat[k] == want
        assert flat["optim.lr_g"] == flat["optim.lr_d"]  # tied


@pytest.mark.parametrize("name", SPACES)
def test_pbt_explore_steps_stay_valid_configs(name):
    """Ray's own PBT explore step, many times from each sample: a smoothing target stays one of its
    choices (Ray multiplies a Categorical's value by 0.8 / 1.2: 0.9 became 1.08, outside [0.5, 1]),
    and a continuous key is clipped to its config range."""
    import functools
    import random

    from ray.tune.schedulers.pbt import _explore

    search, space = resolve_search(TuneOptions(space=name))
    mutations = pbt_mutations(space, search.mutable)
    explore = functools.partial(clamp_to_bounds, keys=tuple(search.mutable))
    random_state = np.random.default_rng(0)
    random.seed(0)
    for _ in range(5):
        config = {k: d.sample(random_state=random_state) for k, d in space.items()}
        config = {k: v.item() if hasattr(v, "item") else v for k, v in config.items()}
        for _ in range(20):  # a chain of explore steps, as a long PBT run makes
            config, _ops = _explore(config, mutations, 0.25, (1.2, 0.8), explore)
            trial_config(search.base, config, search.keys, search.tied)  # raises ConfigError if invalid
            if "techniques.real_label" in mutations:
                assert config["techniques.real_label"] in space["techniques.real_label"].categories


def test_clamp_to_bounds_clips_to_the_config_range():
    config = {"techniques.real_label": 1.08, "optim.lr_d": -1e-4, "data.batch_size": 64}
    clamp_to_bounds(config, ("techniques.real_label", "optim.lr_d"))
    assert config == {"techniques.real_label": 1.0, "optim.lr_d": 0.0, "data.batch_size": 64}


def test_semi_supervised_spaces_vary_labels_smoothing_and_mbd():
    for name in ("digits", "mnist", "cifar10", "svhn"):
        keys = set(tune_spaces.load_space(name).space())
        assert {"data.labels_per_class", "techniques.real_label", "techniques.minibatch_discrimination",
                "techniques.mbd_kernels", "techniques.mbd_dim", "optim.lr_d", "techniques.fm_layer",
                "techniques.fm_norm"} <= keys
        assert tune_spaces.load_space(name).METRIC == "val_ssl_error"
    assert set(tune_spaces.load_space("digits").space()["data.labels_per_class"].categories) == {2, 5, 10}
    assert set(tune_spaces.load_space("mnist").space()["data.labels_per_class"].categories) == {2, 5, 10, 20}
    assert set(tune_spaces.load_space("cifar10").space()["data.labels_per_class"].categories) == {100, 200, 400, 800}
    assert 1.0 in tune_spaces.load_space("digits").space()["techniques.real_label"].categories  # smoothing off
    assert tune_spaces.load_space("ring8").METRIC == "val_modes_captured"
    assert tune_spaces.load_space("imagenet128").METRIC == "val_inception_score"


def test_set_fixes_a_varied_key_and_checkpoints_follow_evaluations():
    search, space = resolve_search(TuneOptions(space="digits", overrides=["data.labels_per_class=5", "eval.every=3"]))
    assert "data.labels_per_class" not in space and search.base.data.labels_per_class == 5
    assert search.base.train.checkpoint_every == 3
    with pytest.raises(ConfigError):
        resolve_search(TuneOptions(space="digits", overrides=["nope.key=1"]))


def test_trial_config_takes_typed_samples():
    search, _ = resolve_search(TuneOptions(space="digits"))
    sampled = {"techniques.minibatch_discrimination": np.bool_(True), "optim.lr_d": np.float64(1e-3),
               "model.d_widths": [64, 32]}
    cfg = trial_config(search.base, sampled, list(sampled), {})
    assert cfg.techniques.minibatch_discrimination is True and cfg.optim.lr_d == 1e-3
    assert cfg.model.d_widths == [64, 32] and type(cfg.optim.lr_d) is float
    with pytest.raises(ConfigError, match="optim.lr_d"):
        trial_config(search.base, {"optim.lr_d": "fast"}, ["optim.lr_d"], {})


def test_label_count_changes_the_labeled_subset_deterministically():
    from igan.data.holdout import HoldOutSpec, choose

    y, keys = np.repeat(np.arange(10), 30), [f"{i:06d}" for i in range(300)]
    val2, a2 = choose(keys, y, HoldOutSpec(3, 0, 2, 1, 10))
    val5, a5 = choose(keys, y, HoldOutSpec(3, 0, 5, 1, 10))
    assert np.array_equal(a2, choose(keys, y, HoldOutSpec(3, 0, 2, 1, 10))[1]) and len(a2) == 20 and len(a5) == 50
    assert set(a2) <= set(a5) and np.array_equal(val2, val5)  # one validation set for every label count


def test_space_from_a_py_file(tmp_path):
    path = tmp_path / "my_space.py"
    path.write_text("from ray import tune\nPRESET = 'ring8'\nMETRIC, MODE = 'val_modes_captured', 'max'\n"
                    "def space():\n    return {'techniques.real_label': tune.choice([1.0, 0.9])}\n")
    search, space = resolve_search(TuneOptions(space=str(path)))
    assert search.preset == "ring8" and search.keys == ["techniques.real_label"] and search.mode == "max"
    assert search.mutable == ["techniques.real_label"]
    (tmp_path / "bad.py").write_text("PRESET = 'digits'\n")
    with pytest.raises(UserError, match="lacks METRIC, MODE, space"):
        resolve_search(TuneOptions(space=str(tmp_path / "bad.py")))


def _grid_space(overlays: dict, vary_overlay: bool = True):
    """A space given as an object (no file): ``overlays`` x two seeds, the label draw tied to the seed."""
    from types import SimpleNamespace

    from ray import tune

    def space():
        grid = {"train.seed": tune.grid_search([0, 1])}
        return {"overlay": tune.grid_search(list(overlays)), **grid} if vary_overlay else grid

    return SimpleNamespace(PRESET="digits", METRIC="val_ssl_error", MODE="min", OVERLAYS=overlays,
                           TIED={"data.label_seed": "train.seed"}, space=space)


def test_space_object_with_overlays_expands_its_grid_into_valid_configs():
    """A space given as an object: the grid (overlays x seeds) expands to one valid Config per cell;
    each overlay's values are set over the base, --set included, and the tied key follows the seed."""
    from ray.tune.search.variant_generator import generate_variants

    from pipelines.tune.search import describe_domain

    overlays = {"plain": {}, "smooth": {"techniques.real_label": 0.9, "data.labels_per_class": 2}}
    opts = TuneOptions(space="grid", space_module=_grid_space(overlays), overrides=["data.labels_per_class=5"])
    search, space = resolve_search(opts)
    assert search.keys == ["overlay", "train.seed"] and search.overlays == overlays
    assert describe_domain(space["overlay"]) == "grid['plain', 'smooth']"
    cells = []
    for _, sampled in generate_variants(space):
        cfg = trial_config(search.base, sampled, search.keys, search.tied, search.overlays)
        cells.append((sampled["overlay"], cfg.train.seed, cfg.data.label_seed, cfg.techniques.real_label,
                      cfg.data.labels_per_class))
    assert sorted(cells) == [("plain", 0, 0, 1.0, 5), ("plain", 1, 1, 1.0, 5),
                             ("smooth", 0, 0, 0.9, 2), ("smooth", 1, 1, 0.9, 2)]


def test_bad_overlays_fail_before_any_trial():
    with pytest.raises(ConfigError, match="techniques.nope"):
        resolve_search(TuneOptions(space="grid", space_module=_grid_space({"a": {"techniques.nope": 1}})))
    with pytest.raises(ConfigError, match="techniques.real_label"):
        resolve_search(TuneOptions(space="grid", space_module=_grid_space({"a": {"techniques.real_label": 0.1}})))
    with pytest.raises(UserError, match="does not vary 'overlay'"):
        resolve_search(TuneOptions(space="grid", space_module=_grid_space({"a": {}}, vary_overlay=False)))
