"""The Table 3 presets (CIFAR-10 sample quality): ``cifar10_mbd`` follows the authors' minibatch-
discrimination recipe plus VBN and one-sided smoothing, and each ablation differs from it in exactly
the technique its row removes (compared key by key on ``Config.flat()``)."""
from __future__ import annotations

import pytest

from igan.presets import TABLE3_ABLATIONS, get_preset

#: The config keys each row of Table 3 changes in ``cifar10_mbd``, besides ``preset``. "Labels" is
#: the K+1 classifier and its labeled subset; -L+HA removes labels and adds historical averaging.
LABELS = {"techniques.semi_supervised": False, "data.labels_per_class": 0}
EXPECTED = {
    "cifar10_mbd_no_vbn": {"techniques.virtual_batch_norm": False},
    "cifar10_mbd_no_l_ha": {**LABELS, "techniques.historical_averaging": True},
    "cifar10_mbd_no_ls": {"techniques.real_label": 1.0},
    "cifar10_mbd_no_l": LABELS,
    "cifar10_mbd_no_mbf": {"techniques.minibatch_discrimination": False},
}


def _diff(name: str, base: str = "cifar10_mbd") -> dict:
    """``{key: value in name}`` for every flat config key where preset ``name`` differs from ``base``."""
    a, b = get_preset(base).flat(), get_preset(name).flat()
    assert a.keys() == b.keys()
    return {k: b[k] for k in b if b[k] != a[k]}


def test_cifar10_mbd_is_the_authors_minibatch_model_with_vbn_and_smoothing():
    cfg = get_preset("cifar10_mbd")
    t, m = cfg.techniques, cfg.model
    assert (m.d_input_noise, m.d_input_dropout, m.d_dropout) == (0.2, 0.0, 0.5)  # noise replaces input dropout
    assert t.minibatch_discrimination and (t.mbd_kernels, t.mbd_dim) == (100, 5)
    assert not t.feature_matching and t.generator_loss == "minimax"  # -mean(softplus(lse(l_gen)))
    assert cfg.optim.g_steps == 3 and t.virtual_batch_norm and t.real_label == 0.9
    assert t.semi_supervised and cfg.data.labels_per_class == 400 and not t.historical_averaging
    assert (cfg.eval.num_samples, cfg.eval.splits) == (50000, 10)  # the paper's Inception-score protocol
    # everything else is the cifar10 recipe: architecture, optimiser, schedule, data
    same = {k: v for k, v in get_preset("cifar10").flat().items() if not k.startswith(("techniques.", "eval."))}
    assert {k: v for k, v in same.items() if cfg.flat()[k] != v} == {
        "preset": "cifar10", "model.d_input_noise": 0.0, "model.d_input_dropout": 0.2, "optim.g_steps": 1}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_ablation_removes_exactly_its_technique(name):
    assert _diff(name) == {"preset": name, **EXPECTED[name]}


def test_every_ablation_is_listed():
    assert list(TABLE3_ABLATIONS) == list(EXPECTED)  # the paper's row order
