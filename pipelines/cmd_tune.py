"""``igan tune SPACE``: search hyperparameters with Ray Tune over a space in ``tune_spaces/``; each
trial is an igan training job (a Ray Train ``TorchTrainer`` launched by the trial), tracked as a
child MLflow run of the search's parent run. The best trial's models get the alias ``champion``.

Import stays light: Ray and MLflow are imported only when the command runs.
"""
from __future__ import annotations

import argparse
import json
import sys

from pipelines.cli_options import add_json, add_tracking_uri
from pipelines.resources import DEFAULT_WAIT_S


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``igan tune``."""
    parser.add_argument("space", metavar="SPACE",
                        help="search space: digits, mnist, cifar10, svhn, imagenet128, ring8 (tune_spaces/) "
                             "or a .py file defining PRESET, METRIC, MODE and space()")
    parser.add_argument("--preset", metavar="NAME", help="start trials from this preset (default: the space's)")
    parser.add_argument("--num-samples", type=int, default=8, metavar="N", help="trials (default 8)")
    parser.add_argument("--scheduler", default="asha", choices=("asha", "pbt", "fifo"),
                        help="asha (default): stop poor trials early; pbt: exploit/explore through "
                             "checkpoints; fifo: run every trial to the end")
    parser.add_argument("--max-concurrent", type=int, metavar="N",
                        help="trials at once (default: as many as the cluster's CPUs/GPUs hold, counting each "
                             "trial's driver and workers; more than the cluster can ever hold is cut)")
    parser.add_argument("--trial-backend", default="train", choices=("train", "local"),
                        help="train (default): each trial launches a Ray Train TorchTrainer (multi-worker, "
                             "multi-node); local: each trial runs igan's loop in its own Tune process "
                             "(no worker group to start: small machines, many short trials)")
    parser.add_argument("--workers-per-trial", type=int, default=1, metavar="N",
                        help="Ray Train workers per trial (default 1)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="C",
                        help="CPUs a trial reserves in all (default 1); with --trial-backend train its driver "
                             "takes 0.01 and its workers share the rest")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, metavar="G",
                        help="GPUs per trial, shared by its workers (default 0)")
    parser.add_argument("--wait-for-resources", type=float, default=DEFAULT_WAIT_S, metavar="SECONDS",
                        help="when not even one trial fits on the cluster yet, ask its autoscaler and wait this "
                             f"long (default {DEFAULT_WAIT_S:g}; exit 1 when it does not); a cluster that can "
                             "never hold a trial is refused at once")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V",
                        help="override a config key in every trial (repeatable); a key the space varies "
                             "is fixed instead")
    parser.add_argument("--data", metavar="DIR", help="shard root written by `igan shard`; digits defaults to "
                                                      "a cache under $IGAN_HOME")
    parser.add_argument("--storage", metavar="DIR",
                        help="where searches live (Tune experiments, trial checkpoints; default: "
                             "$IGAN_HOME/ray_results)")
    add_tracking_uri(parser)
    parser.add_argument("--experiment", default="igan", metavar="NAME", help="MLflow experiment (default: igan)")
    parser.add_argument("--name", metavar="NAME", help="search name (default: tune-<space>-<time>-<id>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the search --name (default: the latest in --storage); finished "
                             "trials are not run again")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the sampled configs (default 0)")
    parser.add_argument("--grace-epochs", type=int, metavar="E",
                        help="ASHA's first rung / PBT's perturbation interval in epochs "
                             "(default: a quarter of train.epochs, a multiple of eval.every)")
    parser.add_argument("--max-failures", type=int, default=1, metavar="N",
                        help="restarts of a failed trial and of a trial's crashed workers (default 1)")
    parser.add_argument("--address", metavar="ADDR", help="Ray cluster (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--no-register", action="store_true", help="do not register the best trial's models")
    parser.add_argument("--verbose", action="store_true",
                        help="also show Ray Tune's status output and Ray's and MLflow's own log lines")
    add_json(parser, "end with one JSON line: best config, metric, model URIs, run ids")


def run(args: argparse.Namespace) -> int:
    """Run the search; 0 when it finished, 130 when it was interrupted (resume with --resume)."""
    from pipelines.tune import SearchInterrupted, TuneOptions, run_search

    opts = TuneOptions(
        space=args.space, preset=args.preset, num_samples=args.num_samples, scheduler=args.scheduler,
        max_concurrent=args.max_concurrent, workers_per_trial=args.workers_per_trial,
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial, overrides=args.overrides,
        data=args.data, storage=args.storage, tracking_uri=args.tracking_uri, experiment=args.experiment,
        name=args.name, resume=args.resume, seed=args.seed, grace_epochs=args.grace_epochs,
        max_failures=args.max_failures, address=args.address, register=not args.no_register,
        verbose=2 if args.verbose else 0 if args.json else 1, trial_backend=args.trial_backend, wait_for_resources=args.wait_for_resources,
        hooks=getattr(args, "hooks", []))
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.json else (lambda msg: print(msg, flush=True))
    try:
        summary = run_search(opts, log=log)
    except SearchInterrupted as exc:
        from pipelines.defaults import redact_text

        print(f"igan tune: {redact_text(exc)}", file=sys.stderr, flush=True)
        return 130
    if args.json:
        out = {k: summary[k] for k in ("name", "space", "preset", "metric", "mode", "best_value", "best_test_value", "best_trial",
                                       "best_run_id", "best_config", "model_uris", "parent_run_id", "experiment",
                                       "tracking_uri", "path", "report_artifact", "seconds")}
        out["best_full_config"] = summary["best_full_config"]
        out["trials"] = summary["trials"]
        print(json.dumps(out, default=str), flush=True)
    return 0
