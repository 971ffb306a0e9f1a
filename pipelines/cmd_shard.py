"""``igan shard DATASET --out DIR``: write a data set as WebDataset shards plus manifests (Ray Data).

Import stays light: Ray is imported only when the command runs.
"""
from __future__ import annotations

import argparse
import json
import time

from pipelines.cli_options import add_json

DATASETS = ("digits", "mnist", "cifar10", "svhn", "imagenet")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``igan shard`` (README, "Commands")."""
    parser.add_argument("dataset", metavar="DATASET", help=f"one of: {' '.join(DATASETS)}")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="shard root: a folder or URI (s3://, gs://, file://); each split goes to DIR/<split>/")
    parser.add_argument("--src", metavar="PATH",
                        help="raw files: CIFAR folder or .tar.gz, SVHN/MNIST folder, ImageNet root with "
                             "train/ and val/ (digits needs none); on a cluster, a path every node can read")
    parser.add_argument("--split", metavar="NAME", help="shard only this split (default: all the source has)")
    parser.add_argument("--image-size", type=int, metavar="N",
                        help="output side in pixels (default: 128 for imagenet, native for the others)")
    parser.add_argument("--samples-per-shard", type=int, metavar="N",
                        help="samples per shard (default: digits 256, imagenet 1000, others 5000)")
    parser.add_argument("--crop", choices=("center", "squash"), default="center",
                        help="center: shorter side to N then the central NxN; squash: whole image to NxN")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into DIR/<split>/ even when it holds files igan shard did not write "
                             "(only <split>-NNNNNN.tar and manifest.json are replaced; other files are kept)")
    parser.add_argument("--address", metavar="ADDR",
                        help="Ray cluster to run on (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--no-progress", action="store_true", help="hide Ray Data's progress bars")
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    """Run the sharding job; 0 on success. Bad input raises UserError (the CLI exits 2)."""
    from pipelines.errors import UserError, check_writable

    if args.dataset not in DATASETS:
        raise UserError(f"unknown data set '{args.dataset}'; allowed: {', '.join(DATASETS)}")
    check_writable(args.out, "--out")
    from pipelines.shard import shard_dataset

    t0 = time.perf_counter()
    manifests = shard_dataset(args.dataset, args.out, src=args.src, split=args.split,
                              image_size=args.image_size, samples_per_shard=args.samples_per_shard,
                              address=args.address, crop=args.crop, progress=not args.no_progress,
                              overwrite=args.overwrite, log=print)
    if args.json:
        from igan.data.storage import join

        print(json.dumps({
            "dataset": args.dataset, "out": args.out, "seconds": round(time.perf_counter() - t0, 3),
            "splits": {m["split"]: {"path": join(args.out, m["split"]), "num_samples": m["num_samples"],
                                    "num_shards": len(m["shards"]), "num_skipped": len(m["skipped"]),
                                    "image_size": m["image_size"], "channels": m["channels"]}
                       for m in manifests},
        }))
    return 0
