"""igan.evaluator: a role's samples are generated, gathered and scored in rounds of at most
``igan.evaluation.SCORE_ROUND``, and the score over the rounds is the score of all the samples together."""
from __future__ import annotations

import pytest
import torch
from helpers import LinearSoftmaxScorer, tiny

from igan.config import apply_overrides


@pytest.mark.parametrize("role,count", [("test", 30), ("val", 20)])
def test_scores_in_rounds_are_the_score_of_all_samples(role, count, monkeypatch):
    import igan.evaluation as evaluation
    import igan.evaluator as ev
    from igan.data.pixels import to_uint8
    from igan.evaluation import SAMPLE_SEED_OFFSET
    from igan.metrics import inception_score
    from igan.trainer import Trainer

    monkeypatch.setattr(evaluation, "SCORE_ROUND", 12)  # 30 test samples: rounds of 12, 12, 6; 20 val: 12, 8
    cfg = apply_overrides(tiny("digits"), ["eval.scorer=none", "eval.num_samples=20", "eval.final_num_samples=30",
                                           "eval.splits=5", "data.batch_size=4"])
    trainer = Trainer(cfg, device="cpu")
    evaluator = ev.Evaluator(cfg, None, 0, 1)
    evaluator.scorer, evaluator.wants_samples = LinearSoftmaxScorer(64), True  # a scorer without weights or training
    metrics, points = evaluator.sample_metrics(trainer, role)
    assert points is None  # points are kept for the toy sets only
    base = cfg.train.seed + SAMPLE_SEED_OFFSET[role]
    sizes = [12, 12, 6] if role == "test" else [12, 8]
    samples = torch.cat([trainer.generate(n, seed=base + evaluation.ROUND_SEED_STEP * k) for k, n in enumerate(sizes)])
    assert len(samples) == count
    expected = inception_score(evaluator.scorer.probabilities(to_uint8(samples, cfg.data.pixel_range)), splits=5)
    assert (metrics["inception_score"], metrics["inception_score_std"]) == pytest.approx(expected)
    # round 0 is the role's sample draw as it was before rounds: the first samples are unchanged
    torch.testing.assert_close(samples[:12], trainer.generate(12, seed=base))


def test_toy_points_of_all_rounds_are_scored_and_drawn(monkeypatch):
    import igan.evaluation as evaluation
    import igan.evaluator as ev
    from igan.data.toy import TOY_STD, toy_centers
    from igan.evaluation import SAMPLE_SEED_OFFSET
    from igan.metrics import mode_coverage
    from igan.trainer import Trainer

    monkeypatch.setattr(evaluation, "SCORE_ROUND", 25)
    cfg = apply_overrides(tiny("ring8"), ["eval.num_samples=60", "model.g_widths=[8]", "model.d_widths=[8]"])
    trainer = Trainer(cfg, device="cpu")
    metrics, grid = ev.Evaluator(cfg, None, 0, 1).evaluate(trainer, "val")
    base = cfg.train.seed + SAMPLE_SEED_OFFSET["val"]
    points = torch.cat([trainer.generate(n, seed=base + evaluation.ROUND_SEED_STEP * k) for k, n in enumerate([25, 25, 10])])
    modes, hq = mode_coverage(points.numpy(), toy_centers("ring8"), TOY_STD["ring8"])
    assert metrics["val_modes_captured"] == modes and metrics["val_high_quality_fraction"] == pytest.approx(hq)
    assert grid.shape == (256, 256, 3)
