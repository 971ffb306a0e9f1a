"""``igan sample MODEL_URI --n N --out FILE.png [--seed S]``: a PNG grid of N samples from a registered
generator (toy presets: a scatter plot). MODEL_URI is ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``
or ``runs:/RUN_ID/generator``. Import stays light: torch and MLflow load when it runs."""
from __future__ import annotations

import argparse
import json

from pipelines.cli_options import add_model_loading, add_model_uri


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``igan sample``."""
    add_model_uri(parser)
    parser.add_argument("--n", type=int, required=True, metavar="N", help="number of samples")
    parser.add_argument("--out", required=True, metavar="FILE.png", help="where to write the PNG")
    add_model_loading(parser)


def run(args: argparse.Namespace) -> int:
    """Write the grid and print its path; 0 on success."""
    import math
    import os
    from pathlib import Path

    from pipelines.errors import UserError

    if args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out must name a .png file, got '{args.out}'")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from PIL import Image

    from igan.evaluation import sample_grid
    from pipelines.registry import generate_samples

    name, version, run_id, generator, cfg = open_generator(args)
    samples = generate_samples(generator, cfg, args.n, seed=args.seed)
    grid = sample_grid(samples, cfg, nrow=math.ceil(math.sqrt(args.n)))
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(out, format="PNG")
    print(out)
    if args.json:
        print(json.dumps({"model_uri": args.model_uri, "name": name, "version": version, "run_id": run_id,
                          "preset": cfg.preset, "n": args.n, "seed": args.seed, "out": str(out.resolve()),
                          "width": int(grid.shape[1]), "height": int(grid.shape[0])}))
    return 0


def open_generator(args: argparse.Namespace):
    """``(name, version, run_id, generator, cfg)`` for ``args.model_uri`` on ``args.device``, from the
    store named by ``args.tracking_uri`` (or the default); UserError when it cannot be found, or is
    stored pickled and ``args.trust_pickled_model`` is not set."""
    from pipelines.defaults import resolve_tracking_uri
    from pipelines.registry import check_tracking_uri, load_generator, resolve_model_uri

    tracking_uri = resolve_tracking_uri(args.tracking_uri)
    check_tracking_uri(tracking_uri)
    name, version, run_id = resolve_model_uri(args.model_uri, tracking_uri)
    generator, cfg = load_generator(args.model_uri, tracking_uri, device=pick_device(args.device),
                                    trust_pickled=args.trust_pickled_model)
    return name, version, run_id, generator, cfg


def pick_device(choice: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; UserError for ``cuda`` without a GPU."""
    import torch

    from pipelines.errors import UserError

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is available")
    return choice
