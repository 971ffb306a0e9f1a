"""``igan models [NAME]``: the registered igan models, their versions, aliases, source runs and the
runs' headline metrics. Import stays light: MLflow loads when it runs."""
from __future__ import annotations

import argparse
import json
import time

from pipelines.cli_options import add_json, add_tracking_uri


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``igan models``."""
    parser.add_argument("name", nargs="?", metavar="NAME",
                        help="only this registered model, e.g. igan-digits-generator (default: every igan-* model)")
    add_tracking_uri(parser)
    parser.add_argument("--no-metrics", action="store_true", help="skip reading the source runs' metrics")
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    """Print the table (and with ``--json`` one JSON object); 0 on success."""
    from pipelines.defaults import redact_uri, resolve_tracking_uri
    from pipelines.tracking import local_store_path

    tracking_uri = resolve_tracking_uri(args.tracking_uri)
    db = local_store_path(tracking_uri)
    if db is not None and not db.expanduser().exists() and args.name is None:
        models: list[dict] = []  # nothing trained yet: an empty listing, not an error
    else:
        from pipelines.registry import check_tracking_uri, list_models

        check_tracking_uri(tracking_uri)
        models = list_models(tracking_uri, args.name, with_metrics=not args.no_metrics)
    print_table(models, redact_uri(tracking_uri))
    if args.json:
        print(json.dumps({"tracking_uri": redact_uri(tracking_uri), "models": models}))
    return 0


def print_table(models: list[dict], tracking_uri: str) -> None:
    """One line per model version: name, version, aliases, run id, creation time, metrics;
    ``tracking_uri`` (already redacted) names the store when it holds none."""
    if not models:
        print(f"no registered igan models in {tracking_uri}")
        return
    rows = [("NAME", "VERSION", "ALIASES", "RUN ID", "CREATED", "METRICS")]
    for model in models:
        for v in model["versions"]:
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v["created"] / 1000)) if v["created"] else "-"
            metrics = " ".join(f"{k}={val:.4g}" for k, val in (v.get("metrics") or {}).items())
            rows.append((model["name"], v["version"], ",".join(v["aliases"]) or "-", v["run_id"] or "-",
                         created, metrics or "-"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) + "  " + str(row[-1]))
