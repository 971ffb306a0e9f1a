"""igan.evaluation: which network scores (``eval.scorer``, auto resolved by the weight files found),
the test role's sample count (``eval.final_num_samples``) and the score of real images, each against
a direct computation. Weight files are untrained networks of the real layouts (conftest)."""
from __future__ import annotations


import pytest
import torch
from helpers import LinearSoftmaxScorer

from igan.config import apply_overrides
from igan.presets import get_preset

PORT = "pt_inception-2015-12-05-6726825d.pth"
TORCHVISION = "inception_v3_google-0cc3c7bd.pth"


@pytest.fixture
def cache(no_weights):
    """The empty ``$IGAN_CACHE/inception`` folder, where the weight files go by default."""
    (no_weights / "inception").mkdir(parents=True)
    return no_weights / "inception"


def _preset(name, *overrides):
    return apply_overrides(get_preset(name), list(overrides))


def _one_line(exc) -> str:
    assert "\n" not in str(exc), str(exc)
    return str(exc)


def test_scorer_choices_without_weights(cache):
    from igan.evaluation import scorer_kind, scorer_network, with_scorer_network

    # auto: Inception on CIFAR-10 and ImageNet (torchvision's when the port is absent), none on toys,
    # a domain classifier elsewhere
    for name, network in (("cifar10", "inception"), ("imagenet128", "inception"), ("digits", "domain"),
                          ("mnist", "domain"), ("svhn", "domain"), ("ring8", "none")):
        cfg = _preset(name, "eval.scorer=auto")
        assert scorer_network(cfg) == network, name
        assert scorer_kind(cfg) == network, name
        assert with_scorer_network(cfg).eval.scorer == network
    for choice, kind in (("inception_tf2015", "inception"), ("inception", "inception"), ("domain", "domain"),
                         ("none", "none")):
        cfg = _preset("cifar10", f"eval.scorer={choice}")
        assert (scorer_network(cfg), scorer_kind(cfg)) == (choice, kind)
        assert with_scorer_network(cfg, "domain") is cfg  # a named scorer is never replaced


def test_auto_without_any_weights_names_both_files(cache):
    from igan.evaluation import require_scorer
    from igan.metrics import InceptionWeightsNotFound

    with pytest.raises(InceptionWeightsNotFound) as err:
        require_scorer(get_preset("cifar10"))
    msg = _one_line(err.value)
    assert TORCHVISION in msg and PORT in msg and "IGAN_INCEPTION_WEIGHTS" in msg


def test_auto_takes_the_port_from_the_cache(cache, inception_tf2015_file, inception_weights_file):
    """The port's file in the cache folder is found and scores (it was skipped before)."""
    from igan.evaluation import make_scorer, require_scorer, scorer_network

    cfg = get_preset("cifar10")
    (cache / TORCHVISION).symlink_to(inception_weights_file)
    assert scorer_network(cfg) == "inception"
    (cache / PORT).symlink_to(inception_tf2015_file)
    assert scorer_network(cfg) == "inception_tf2015" and scorer_network(get_preset("imagenet128")) == "inception_tf2015"
    assert require_scorer(cfg) == str(cache / PORT)
    scorer = make_scorer(cfg)
    assert scorer.kind == "tf2015" and scorer.num_classes == 1008
    assert make_scorer(_preset("cifar10", "eval.scorer=inception")).kind == "torchvision"  # named: torchvision's


def test_env_var_at_the_port_file_scores_with_it(no_weights, inception_tf2015_file, small_inception_inputs,
                                                 monkeypatch):
    """``IGAN_INCEPTION_WEIGHTS`` naming the port's file: auto scores with the 2015 graph (before,
    a ValueError); the score is the formula on that network's bias-free softmax."""
    from igan.data.pixels import to_uint8
    from igan.evaluation import make_scorer, require_scorer, score_samples, scorer_network
    from igan.metrics import inception_score

    monkeypatch.setenv("IGAN_INCEPTION_WEIGHTS", str(inception_tf2015_file))
    cfg = _preset("cifar10", "eval.splits=2")
    assert scorer_network(cfg) == "inception_tf2015" and require_scorer(cfg) == str(inception_tf2015_file)
    scorer = make_scorer(cfg)
    samples = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scores = score_samples(samples, cfg, scorer)
    feats = scorer.features(to_uint8(samples, cfg.data.pixel_range))
    probs = torch.softmax(feats.double() @ scorer.net.fc.weight.detach().double().t(), 1)
    mean, std = inception_score(probs, splits=2)
    assert scores["inception_score"] == pytest.approx(mean, rel=1e-5)
    assert scores["inception_score_std"] == pytest.approx(std, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("choice,file_kind,hint", [("inception", "tf2015", "eval.scorer=inception_tf2015"),
                                                   ("inception_tf2015", "torchvision", "eval.scorer=inception")])
def test_named_network_with_the_other_file_is_one_line(choice, file_kind, hint, no_weights, inception_tf2015_file,
                                                       inception_weights_file, monkeypatch):
    from igan.evaluation import make_scorer, require_scorer
    from igan.metrics import InceptionWeightsInvalid

    path = inception_tf2015_file if file_kind == "tf2015" else inception_weights_file
    monkeypatch.setenv("IGAN_INCEPTION_WEIGHTS", str(path))
    cfg = _preset("cifar10", f"eval.scorer={choice}")
    for call in (require_scorer, make_scorer):
        with pytest.raises(InceptionWeightsInvalid) as err:
            call(cfg)
        msg = _one_line(err.value)
        assert str(path) in msg and hint in msg
    # auto takes whichever network the file holds
    from igan.evaluation import scorer_network

    expected = {"tf2015": "inception_tf2015", "torchvision": "inception"}[file_kind]
    assert scorer_network(get_preset("cifar10")) == expected


def test_held_classes_reads_the_head_only(inception_tf2015_file, inception_weights_file, tmp_path):
    from igan.metrics.inception_weights import held_classes

    assert held_classes(inception_tf2015_file) == 1008 and held_classes(inception_weights_file) == 1000
    legacy = tmp_path / "legacy.pth"  # the pre-zip format cannot be memory-mapped
    torch.save({"fc.weight": torch.zeros(1008, 3)}, legacy, _use_new_zipfile_serialization=False)
    assert held_classes(legacy) == 1008
    (tmp_path / "junk.pth").write_text("not a tensor file")
    assert held_classes(tmp_path / "junk.pth") is None and held_classes(tmp_path / "missing.pth") is None


# -- how many samples -------------------------------------------------------------------------------
def test_final_score_uses_final_num_samples(monkeypatch):
    """The test role scores eval.final_num_samples (the paper's 50,000 on CIFAR-10/ImageNet), the
    periodic val role eval.num_samples; 0 means eval.num_samples."""
    from igan.evaluation import evaluate, final_num_samples
    from igan.trainer import Trainer

    assert final_num_samples(get_preset("cifar10")) == 50000 and get_preset("cifar10").eval.num_samples == 5000
    assert final_num_samples(get_preset("imagenet128")) == 50000
    assert final_num_samples(get_preset("digits")) == get_preset("digits").eval.num_samples
    cfg = _preset("ring8", "eval.num_samples=40", "eval.final_num_samples=60", "model.g_widths=[8]",
                  "model.d_widths=[8]")
    trainer = Trainer(cfg, device="cpu")
    drawn = []
    generate = trainer.generate
    monkeypatch.setattr(trainer, "generate", lambda n, seed=None: drawn.append(n) or generate(n, seed=seed))
    assert set(evaluate(trainer, cfg, role="test")) == {"test_modes_captured", "test_high_quality_fraction"}
    evaluate(trainer, cfg, role="val")
    assert drawn == [60, 40]


def test_score_images_in_batches_is_the_score_of_all():
    from igan.data.pixels import to_uint8
    from igan.evaluation import score_images
    from igan.metrics import inception_score

    cfg = _preset("cifar10", "eval.scorer=none", "eval.splits=5")
    images = torch.rand(53, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1
    scorer = LinearSoftmaxScorer(3 * 4 * 4)
    metrics, n = score_images(images.split(10), cfg, scorer, limit=47)  # stops inside the fifth batch
    expected = inception_score(scorer.probabilities(to_uint8(images[:47], cfg.data.pixel_range)), splits=5)
    assert n == 47 and (metrics["inception_score"], metrics["inception_score_std"]) == pytest.approx(expected)
    assert score_images(images.split(10), cfg, scorer)[1] == 53
    with pytest.raises(ValueError, match="no images"):
        score_images(iter([]), cfg, scorer)


def test_sample_rounds_cover_the_count():
    from igan.evaluation import SCORE_ROUND, sample_rounds

    assert sample_rounds(12000) == [(0, SCORE_ROUND), (1, SCORE_ROUND), (2, 12000 - 2 * SCORE_ROUND)]
    assert sample_rounds(30, 12) == [(0, 12), (1, 12), (2, 6)] and sample_rounds(0) == []
