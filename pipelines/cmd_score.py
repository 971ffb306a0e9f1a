"""``igan score MODEL_URI [--n N] [--data DIR]``: the sample-quality score of a registered generator:
the Inception score (CIFAR-10, ImageNet: Inception-v3; digits, MNIST, SVHN: a domain classifier trained
on the real train split) and, for the toy presets, the modes captured.

``igan score --data ROOT --split NAME [--preset P] [--n N]``: the same score of real images, the
split's own (the paper's "real data" row: 11.24 on CIFAR-10's 50,000 training images with the 2015
Inception graph). Either way the output names the network that scored. Import stays light."""
from __future__ import annotations

import argparse
import json

from pipelines.cli_options import add_model_loading


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``igan score``."""
    parser.add_argument("model_uri", metavar="MODEL_URI", nargs="?",
                        help="models:/igan-<preset>-generator@latest, models:/NAME/VERSION or runs:/RUN_ID/generator; "
                             "without it, --data ROOT --split NAME scores that split's real images")
    parser.add_argument("--n", type=int, metavar="N",
                        help="generated samples (default: the config's eval.final_num_samples, else eval.num_samples); "
                             "with --split: the split's first N images (default: all)")
    parser.add_argument("--data", metavar="DIR",
                        help="shard root of the real data (its train split trains the domain classifier for "
                             "MNIST/SVHN; default: the run's data.path; digits needs none)")
    parser.add_argument("--split", metavar="NAME", help="score the real images of this split of --data (no MODEL_URI)")
    parser.add_argument("--preset", metavar="NAME",
                        help="with --split: the preset whose scorer and pixel range apply (default: the one of the "
                             "split's data set)")
    add_model_loading(parser)


def run(args: argparse.Namespace) -> int:
    """Score, print; 0 on success."""
    import os

    from pipelines.errors import UserError

    if args.n is not None and args.n < 10:
        raise UserError(f"--n must be >= 10, got {args.n}")
    if args.model_uri is None:
        return run_real(args)
    if args.split or args.preset:
        raise UserError("--split and --preset score real images: give them with --data and without MODEL_URI")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from igan.evaluation import (ROUND_SEED_STEP, TOY_SETS, final_num_samples, sample_rounds, score_images,
                                 score_samples, scorer_kind)
    from pipelines.cmd_sample import open_generator
    from pipelines.registry import generate_samples

    name, version, run_id, generator, cfg = open_generator(args)
    if scorer_kind(cfg) == "none" and cfg.data.dataset not in TOY_SETS:
        raise UserError(f"the run's config has eval.scorer=none and '{cfg.data.dataset}' is no toy set: "
                        "nothing to score")
    scorer, network = build_scorer(cfg, args.data)
    n = args.n or final_num_samples(cfg)
    if cfg.data.dataset in TOY_SETS:  # mode coverage counts all the points at once
        metrics = score_samples(generate_samples(generator, cfg, n, seed=args.seed), cfg, scorer)
    else:  # generated and scored in rounds, as the evaluation's final score
        rounds = (generate_samples(generator, cfg, count, seed=args.seed + ROUND_SEED_STEP * k)
                  for k, count in sample_rounds(n))
        metrics = score_images(rounds, cfg, scorer)[0]
    _print_score(metrics, n, network)
    if "modes_captured" in metrics:
        print(f"modes_captured: {metrics['modes_captured']:.0f}/{cfg.data.num_classes}  "
              f"high_quality_fraction: {metrics['high_quality_fraction']:.4f}  (n={n})")
    if args.json:
        print(json.dumps({"model_uri": args.model_uri, "name": name, "version": version, "run_id": run_id,
                          "preset": cfg.preset, "n": n, "seed": args.seed, "scorer": scorer_kind(cfg),
                          "scorer_network": network, **metrics}))
    return 0


def run_real(args: argparse.Namespace) -> int:
    """``igan score --data ROOT --split NAME``: the score of the split's real images; 0 on success."""
    from igan.data.feed import EVAL_BATCH, StreamedSplit
    from igan.data.manifest import ShardDataError
    from igan.evaluation import score_images, scorer_kind
    from pipelines.errors import UserError

    if not args.data or not args.split:
        raise UserError("give MODEL_URI to score a registered generator, or --data ROOT --split NAME to score "
                        "real images")
    cfg = real_data_config(args.data, args.split, args.preset)
    if scorer_kind(cfg) == "none":
        raise UserError(f"preset '{cfg.preset}' has no scorer for images (eval.scorer is none or a toy set): "
                        "nothing to score")
    scorer, network = build_scorer(cfg, args.data)
    images = (x for x, _ in StreamedSplit(args.data, args.split, cfg).batches(EVAL_BATCH))
    try:
        metrics, n = score_images(images, cfg, scorer, limit=args.n)
    except ShardDataError as exc:
        raise UserError(f"cannot read the split '{args.split}' under {args.data}: {exc}".splitlines()[0]) from None
    _print_score(metrics, n, network, f"real images of {args.data}/{args.split}")
    if args.json:
        print(json.dumps({"data": args.data, "split": args.split, "preset": cfg.preset, "n": n,
                          "scorer": scorer_kind(cfg), "scorer_network": network, **metrics}))
    return 0


def real_data_config(root: str, split: str, preset: str | None):
    """The Config scoring ``split`` under the shard root ``root``: ``preset`` (default: the first preset
    of the manifest's data set) with ``data.path=root``. UserError (one line) for a missing split, an
    unknown preset or shards that do not match it."""
    from igan.config import ConfigError, with_values
    from igan.data.manifest import ManifestError, split_manifest
    from igan.presets import PRESETS, get_preset
    from pipelines.errors import UserError
    from pipelines.job_inputs import check_manifest

    try:
        _, manifest = split_manifest(root, split)
    except (ManifestError, OSError) as exc:
        raise UserError(str(exc).splitlines()[0]) from None
    dataset = manifest.get("dataset")
    if preset is None:
        preset = next((name for name, raw in PRESETS.items() if raw.get("data", {}).get("dataset") == dataset), None)
        if preset is None:
            raise UserError(f"the shards at {root} do not name a data set igan has a preset for ({dataset!r}): "
                            "pass --preset")
    try:
        cfg = with_values(get_preset(preset), {"data.path": root})
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    check_manifest(cfg, manifest, root)
    return cfg


def _print_score(metrics: dict, n: int, network: str, what: str = "") -> None:
    from igan.evaluation import NETWORK_NAMES

    if "inception_score" in metrics:
        label = "inception_score" if network.startswith("inception") else "inception_score (domain classifier)"
        print(f"{label}: {metrics['inception_score']:.4f} ± {metrics['inception_score_std']:.4f}  (n={n}"
              f"{', ' + what if what else ''}); scored by {network}: {NETWORK_NAMES[network]}")


def build_scorer(cfg, data: str | None):
    """``(scorer, network)``: the scorer of ``cfg`` (see :func:`igan.evaluation.make_scorer`) and the
    network it is (:func:`igan.evaluation.scorer_network`), or ``(None, "none")`` for toy sets. A
    domain classifier needs the real train split: embedded for digits, else read from the shard root
    ``data`` (or ``cfg.data.path``). UserError when that is missing or when the Inception weights are
    absent or wrong."""
    from igan.data.memory import EMBEDDED, load_embedded
    from igan.evaluation import make_scorer, scorer_network
    from pipelines.errors import UserError

    network = scorer_network(cfg)
    if network == "none":
        return None, network
    train = None
    if network == "domain":
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
        scorer = make_scorer(cfg, train, network=network)
    except (InceptionWeightsNotFound, InceptionWeightsInvalid) as exc:
        raise UserError(str(exc).splitlines()[0]) from None
    if scorer is None:
        raise UserError("no scorer available")
    return scorer, network
