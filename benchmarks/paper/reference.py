"""The "real data" row of Table 3: the test split's real images scored like the generated samples
(the same scorer, the same splits), so the table shows what the scorer gives real images."""
from __future__ import annotations

from igan.config import Config


def real_data_score(cfg: Config, root: str) -> dict:
    """``{"mean", "std", "images"}``: the Inception score (``cfg``'s scorer, ``eval.splits`` splits)
    of ``cfg.data.test_split`` under the shard root ``root``. Scoring with a domain classifier trains
    it first (cached: the trials of the same data then load it instead of training it each)."""
    from igan.data.feed import domain_training_data, load_split
    from igan.evaluation import make_scorer, score_samples, scorer_kind

    if scorer_kind(cfg) == "none":
        raise ValueError("eval.scorer=none: no scorer for the real-data row")
    train = domain_training_data(cfg, root) if scorer_kind(cfg) == "domain" else None
    test = load_split(cfg, root, cfg.data.test_split)
    scores = score_samples(test.x, cfg, make_scorer(cfg, train=train))
    return {"mean": scores["inception_score"], "std": scores["inception_score_std"], "images": len(test.y)}
