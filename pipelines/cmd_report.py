"""``igan report RUN_OR_MODEL_URI [...] --out report.html``: one self-contained HTML page comparing
MLflow runs (config, curves overlaid per metric, throughput, sample grids over time, final
validation and test metrics). Import stays light: MLflow loads when it runs."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``igan report``."""
    from pipelines.report.collect import DEFAULT_MAX_IMAGES

    parser.add_argument("uris", nargs="+", metavar="RUN_OR_MODEL_URI",
                        help="a run id, runs:/RUN_ID, models:/NAME@ALIAS or models:/NAME/VERSION; several "
                             "are compared on one page, in the order given")
    parser.add_argument("--out", required=True, metavar="FILE", help="the HTML file to write (e.g. report.html)")
    parser.add_argument("--title", metavar="TEXT", help="the page's title (default: the run names)")
    parser.add_argument("--max-images", type=int, default=DEFAULT_MAX_IMAGES, metavar="N",
                        help=f"sample grids shown per run and key, spread over the run (default {DEFAULT_MAX_IMAGES})")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite under $IGAN_HOME)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line: the file, its size, the runs")


def run(args: argparse.Namespace) -> int:
    """Write the report; 0 on success."""
    import os

    from pipelines.errors import UserError

    if not 0 <= args.max_images <= 1000:
        raise UserError(f"--max-images must be between 0 and 1000, got {args.max_images}")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from pipelines.defaults import redact_uri, resolve_tracking_uri
    from pipelines.registry import check_tracking_uri
    from pipelines.report.build import build_report, check_out_path, resolve_targets, write_page
    from pipelines.report.page import render
    from pipelines.tracking import make_client

    out = check_out_path(args.out)  # before reading anything: a bad --out fails at once
    tracking_uri = resolve_tracking_uri(args.tracking_uri)
    check_tracking_uri(tracking_uri)
    client = make_client(tracking_uri)
    targets = resolve_targets(client, args.uris, tracking_uri)
    report = build_report(client, targets, tracking_uri, args.title, args.max_images)
    size = write_page(render(report), out)
    print(f"igan report: {len(report.runs)} run{'s' if len(report.runs) != 1 else ''} from "
          f"{redact_uri(tracking_uri)}, {size / 1024:.0f} KiB")
    print(out)
    if args.json:
        print(json.dumps({"out": str(out), "bytes": size, "tracking_uri": redact_uri(tracking_uri),
                          "runs": [{"uri": t.uri, "run_id": t.run_id, "model_name": t.model_name,
                                    "model_version": t.model_version} for t in targets]}))
    return 0
