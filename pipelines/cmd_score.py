"""``igan score MODEL_URI [--n N] [--data DIR]``: the sample-quality score of a registered generator:
the Inception score (CIFAR-10, ImageNet: Inception-v3; digits, MNIST, SVHN: a domain classifier trained
on the real train split) and, for the toy presets, the modes captured. Import stays light."""
from __future__ import annotations

import argparse
import json

from pipelines.cli_options import add_model_loading, add_model_uri


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``igan score``."""
    add_model_uri(parser)
    parser.add_argument("--n", type=int, metavar="N", help="generated samples (default: the config's eval.num_samples)")
    parser.add_argument("--data", metavar="DIR",
                        help="shard root of the real data (its train split trains the domain classifier for "
                             "MNIST/SVHN; default: the run's data.path; digits needs none)")
    add_model_loading(parser)


def run(args: argparse.Namespace) -> int:
    """Generate, score, print; 0 on success."""
    import os

    from pipelines.errors import UserError

    if args.n is not None and args.n < 10:
        raise UserError(f"--n must be >= 10, got {args.n}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from igan.evaluation import TOY_SETS, score_samples, scorer_kind
    from pipelines.cmd_sample import open_generator
    from pipelines.registry import generate_samples

    name, version, run_id, generator, cfg = open_generator(args)
    if scorer_kind(cfg) == "none" and cfg.data.dataset not in TOY_SETS:
        raise UserError(f"the run's config has eval.scorer=none and '{cfg.data.dataset}' is no toy set: "
                        "nothing to score")
    scorer = build_scorer(cfg, args.data)
    n = args.n or cfg.eval.num_samples
    samples = generate_samples(generator, cfg, n, seed=args.seed)
    metrics = score_samples(samples, cfg, scorer)
    if "inception_score" in metrics:
        label = "inception_score" if scorer_kind(cfg) == "inception" else "inception_score (domain classifier)"
        print(f"{label}: {metrics['inception_score']:.4f} ± {metrics['inception_score_std']:.4f}  (n={n})")
    if "modes_captured" in metrics:
        print(f"modes_captured: {metrics['modes_captured']:.0f}/{cfg.data.num_classes}  "
              f"high_quality_fraction: {metrics['high_quality_fraction']:.4f}  (n={n})")
    if args.json:
        print(json.dumps({"model_uri": args.model_uri, "name": name, "version": version, "run_id": run_id,
                          "preset": cfg.preset, "n": n, "seed": args.seed, "scorer": scorer_kind(cfg), **metrics}))
    return 0


def build_scorer(cfg, data: str | None):
    """The scorer of ``cfg`` (see :func:`igan.evaluation.make_scorer`) or None for toy sets. A domain
    classifier needs the real train split: embedded for digits, else read from the shard root ``data``
    (or ``cfg.data.path``). UserError when that is missing or when the Inception weights are absent or wrong."""
    from igan.data.memory import EMBEDDED, load_embedded
    from igan.evaluation import make_scorer, scorer_kind
    from pipelines.errors import UserError

    kind = scorer_kind(cfg)
    if kind == "none":
        return None
    train = None
    if kind == "domain":
        if cfg.data.dataset in EMBEDDED:
            train = load_embedded(cfg, "train")
        else:
            root = data or cfg.data.path
            if not root:
                raise UserError(f"the {cfg.data.dataset} score uses a domain classifier trained on the real "
                                f"train split: pass --data DIR (the shard root written by `igan shard`)")
            from igan.data.feed import domain_training_data

            try:
                train = domain_training_data(cfg, root)
            except (OSError, ValueError, KeyError) as exc:
                raise UserError(f"cannot read the train split under '{root}': {exc}".splitlines()[0]) from None
    from igan.metrics import InceptionWeightsInvalid, InceptionWeightsNotFound

    try:
        scorer = make_scorer(cfg, train)
    except (InceptionWeightsNotFound, InceptionWeightsInvalid) as exc:
        raise UserError(str(exc).splitlines()[0]) from None
    if scorer is None:
        raise UserError("no scorer available")
    return scorer
