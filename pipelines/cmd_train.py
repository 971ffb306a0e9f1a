"""``igan train``: train an improved GAN with Ray Train, tracked in MLflow.

With no arguments it trains the ``digits`` preset on this machine (sharding the embedded digits on
first use). Import stays light: Ray and MLflow are imported only when the command runs.
"""
from __future__ import annotations

import argparse
import json
import sys

from pipelines.cli_options import add_json, add_tracking_uri
from pipelines.resources import DEFAULT_WAIT_S


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``igan train``."""
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--preset", metavar="NAME",
                     help="digits (default), mnist, cifar10, svhn, imagenet128, ring8 or grid25")
    src.add_argument("--config", metavar="FILE", help="YAML config (sections data/model/...; 'preset: NAME' "
                                                      "starts from that preset)")
    parser.add_argument("--data", metavar="DIR", help="shard root written by `igan shard` (folder or URI); "
                                                      "digits defaults to a cache under $IGAN_HOME")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V",
                        help="override a config key, e.g. --set train.epochs=10 (repeatable)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="Ray Train workers (default: one per GPU with --gpus-per-worker, else 1)")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G",
                        help="GPUs per worker (default 0: CPU with gloo; >0: NCCL)")
    parser.add_argument("--cpus-per-worker", type=float, metavar="C",
                        help="CPUs per worker (default: the cluster's CPUs / workers)")
    parser.add_argument("--wait-for-resources", type=float, default=DEFAULT_WAIT_S, metavar="SECONDS",
                        help="when the cluster lacks the workers' GPUs/CPUs, ask its autoscaler and wait this "
                             f"long for them (default {DEFAULT_WAIT_S:g}; exit 1 when they do not come); a "
                             "cluster that can never have them is refused at once")
    parser.add_argument("--threads", type=int, metavar="T",
                        help="torch threads per worker (default: its CPUs)")
    add_tracking_uri(parser)
    parser.add_argument("--experiment", default="igan", metavar="NAME", help="MLflow experiment (default: igan)")
    parser.add_argument("--storage", metavar="DIR",
                        help="Ray Train storage for checkpoints: folder or URI (default: $IGAN_HOME/ray_results)")
    parser.add_argument("--name", metavar="RUN_NAME", help="job name (default: <preset>-<time>-<id>); "
                                                           "the MLflow run and the storage folder take it")
    parser.add_argument("--resume", action="store_true",
                        help="continue the job --name (default: the latest in --storage) from its last checkpoint")
    parser.add_argument("--max-failures", type=int, default=3, metavar="N",
                        help="worker crashes to recover from (restart from the last checkpoint; default 3)")
    parser.add_argument("--address", metavar="ADDR", help="Ray cluster (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--no-register", action="store_true", help="do not register the models")
    parser.add_argument("--verbose", action="store_true", help="also show Ray's and MLflow's own log lines")
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    """Run the job; 0 when it finished, 1 when it stopped (non-finite loss, failed workers)."""
    from pipelines.errors import UserError, report_error
    from pipelines.train import TrainError, TrainOptions, print_summary, run_training

    for flag, value, low in (("--workers", args.workers, 1), ("--threads", args.threads, 1),
                             ("--max-failures", args.max_failures, -1)):
        if value is not None and value < low:
            raise UserError(f"{flag} must be >= {low}, got {value}")
    if args.gpus_per_worker < 0 or (args.cpus_per_worker is not None and args.cpus_per_worker <= 0):
        raise UserError("--gpus-per-worker must be >= 0 and --cpus-per-worker > 0")
    if args.wait_for_resources < 0:
        raise UserError(f"--wait-for-resources must be >= 0 seconds, got {args.wait_for_resources:g}")
    opts = TrainOptions(
        preset=args.preset, config_file=args.config, overrides=args.overrides, data=args.data,
        workers=args.workers, gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
        threads=args.threads, tracking_uri=args.tracking_uri, experiment=args.experiment, storage=args.storage,
        name=args.name, resume=args.resume, address=args.address, max_failures=args.max_failures,
        register=not args.no_register, wait_for_resources=args.wait_for_resources,
        verbose=args.verbose, hooks=getattr(args, "hooks", []))
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.json else (lambda msg: print(msg, flush=True))
    try:
        summary = run_training(opts, log=log)
    except TrainError as exc:
        return report_error("train", 1, str(exc))
    print_summary(summary, log=log)
    if args.json:
        print(json.dumps(summary, default=str), flush=True)
    return 0
