"""paper_tables: one command per result table of the paper (Salimans et al. 2016): every row of the
table over ``--seeds`` seeds as ONE Ray Tune grid (rows x seeds: the rows run side by side on a
cluster), one MLflow parent run with a child run per row and seed, then a markdown table of the test
metric's mean ± std over seeds beside the paper's figure, printed and written to ``--out``.

Tables: ``mnist`` (table 1: errors of 10,000 at 20/50/100/200 labels), ``cifar10`` and ``svhn``
(table 2: test error %), ``cifar10_is`` (table 3: the Inception score of ``cifar10_mbd`` and its
ablations, plus real data scored alike). ``--scale full`` runs the presets' recipes on real shards
(``--data ROOT``; a GPU cluster); ``--scale smoke`` runs two short epochs of tiny models, on
``--data ROOT`` or, without it, on synthetic format-faithful fixtures sharded into a temporary
folder (the output says so). Prints the table, then one JSON line.

    .venv/bin/python benchmarks/paper_tables.py --table {mnist,cifar10,svhn,cifar10_is} --scale {smoke,full} \\
        --seeds N [--rows V,V] [--data ROOT] [--out FILE.md] [--storage DIR] [--tracking-uri URI] \\
        [--experiment NAME] [--name NAME] [--cpus-per-trial C] [--gpus-per-trial G] [--workers-per-trial W] \\
        [--max-concurrent N] [--trial-backend local|train] [--address ADDR] [--set K=V ...]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.paper import fixtures, grid, report  # noqa: E402
from benchmarks.paper.tables import TABLES, Table  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", required=True, choices=list(TABLES))
    ap.add_argument("--scale", required=True, choices=grid.SCALES)
    ap.add_argument("--seeds", type=int, default=3, help="seeds per row (0..N-1; each also draws the labeled subset)")
    ap.add_argument("--rows", default="", help="only these rows: values or labels, comma-separated (e.g. 10,20; "
                                               "a label starting with '-' as --rows=-LS,-L)")
    ap.add_argument("--data", help="shard root (required at --scale full; smoke: synthetic fixtures without it)")
    ap.add_argument("--out", help="markdown file (default <storage>/paper_tables/<name>.md)")
    ap.add_argument("--storage", help="Ray Tune storage (default $IGAN_HOME/ray_results)")
    ap.add_argument("--tracking-uri", help="MLflow tracking URI (default as igan's commands)")
    ap.add_argument("--experiment", default="paper-tables")
    ap.add_argument("--name", help="the search's name (default paper-<table>-<scale>-<time>)")
    ap.add_argument("--cpus-per-trial", type=float, default=1.0)
    ap.add_argument("--gpus-per-trial", type=float, default=0.0)
    ap.add_argument("--workers-per-trial", type=int, default=1)
    ap.add_argument("--max-concurrent", type=int)
    ap.add_argument("--trial-backend", choices=("local", "train"),
                    help="default: local at smoke scale (the loop in the trial's process), train at full")
    ap.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V",
                    help="config override for every trial, after the scale's")
    return ap.parse_args(argv)


def prepare_data(table: Table, args: argparse.Namespace, work: str) -> tuple[str, str]:
    """``(shard root, what it is in words)``: ``--data``, else (smoke scale) a synthetic fixture
    sharded under ``work``. UserError at full scale without ``--data``."""
    from igan.presets import get_preset
    from pipelines.errors import UserError

    dataset = get_preset(table.preset).data.dataset
    if args.data:
        return args.data, f"shards at {args.data}"
    if args.scale == "full":
        raise UserError(f"--scale full needs --data ROOT: shard the real files first "
                        f"(`igan shard {dataset} --src RAW --out ROOT`)")
    sizes = fixtures.TABLE3_CIFAR if table.name == "cifar10_is" else None
    made = fixtures.synthetic_shards(dataset, work, sizes)
    return made["root"], (f"SYNTHETIC {dataset} fixture (random pixels and labels in the real file format: "
                          f"{made['train']} train / {made['test']} test images)")


def notes(table: Table, args: argparse.Namespace, data_note: str, overrides: list[str]) -> list[str]:
    """What a reader must know to read the table: scale, data, scorer, what ± means."""
    out = []
    if args.scale == "smoke":
        out.append("**Smoke scale**: two epochs of a few steps with tiny widths (`" + " ".join(overrides) + "`). "
                   "These numbers show that the pipeline runs end to end; they say nothing about the recipe "
                   "and are not comparable with the paper column.")
    else:
        out.append("Full scale: each row's preset as the paper's recipe" + (f" with `{' '.join(overrides)}`"
                                                                        if overrides else "") + ".")
    out.append(f"Data: {data_note}.")
    if table.metric == "inception_score":
        scorer = next((o.split("=", 1)[1] for o in reversed(overrides) if o.startswith("eval.scorer=")), "auto")
        if scorer == "domain":
            out.append("Scorer: a small domain classifier trained on the same data (`eval.scorer=domain`), not the "
                       "Inception network: no Inception weight file here. Not an Inception score"
                       + (": on random labels the classifier predicts ~uniformly, so every score is ~1."
                          if "SYNTHETIC" in data_note else "."))
        out.append("Paper: ± over 10 splits of one model's 50,000 samples; igan: ± over seeds of each run's "
                   "test score (each run's std over splits: `test_inception_score_std` in the JSON line's runs).")
    else:
        if args.scale == "smoke":
            out.append("`eval.scorer=none` at smoke scale: the table reports the EMA classifier's error only.")
        out.append("Paper: ± over random labeled subsets; igan: ± over seeds, each seed drawing both the "
                   "parameters and the labeled subset (`data.label_seed` = `train.seed`).")
    out.append(f"Each cell is a run's `{table.test_metric}` after its last epoch (the test split, measured once); "
               f"runs are not chosen on anything.")
    return out


def _reference(table: Table, args: argparse.Namespace, root: str, overrides: list[str]) -> dict | None:
    """Table 3's real-data row scored like the samples (None for the other tables, or without a
    scorer). Trains and caches a domain scorer before the trials need it."""
    if table.reference is None:
        return None
    from benchmarks.paper.reference import real_data_score
    from igan.evaluation import scorer_kind
    from igan.presets import build_config
    from pipelines.job_inputs import ensure_scorer

    cfg = build_config(table.preset, overrides=overrides, values={"data.path": root})
    if scorer_kind(cfg) == "none":
        return None
    ensure_scorer(cfg)
    score = real_data_score(cfg, root)
    return {**score, "note": f"{score['images']} real test images"}


def _with_split_std(client, trial: dict, table: Table) -> dict:
    """The trial's row with, for a score, the std over splits its child run logged beside the score."""
    if table.metric != "inception_score" or not trial.get("run_id"):
        return trial
    metrics = client.get_run(trial["run_id"]).data.metrics
    return {**trial, f"{table.test_metric}_std": metrics.get(f"{table.test_metric}_std")}


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    """Run the table; returns the JSON-line dict (with ``markdown``)."""
    from mlflow import MlflowClient

    from pipelines import defaults
    from pipelines.jobs import new_job_name, resolve_storage
    from pipelines.tune import run_search

    t0 = time.perf_counter()
    table = TABLES[args.table].pick([r for r in args.rows.split(",") if r])
    storage = resolve_storage(args.storage, uri_ok=False)
    name = args.name or new_job_name(f"paper-{table.name}-{args.scale}")
    out = Path(args.out or Path(storage) / "paper_tables" / f"{name}.md")
    tracking_uri = defaults.resolve_tracking_uri(args.tracking_uri)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731 - stdout keeps the table and JSON
    work = tempfile.mkdtemp(prefix="igan-paper-")
    try:
        root, data_note = prepare_data(table, args, work)
        opts = grid.grid_options(
            table, args.scale, args.seeds, args.overrides, data=root, storage=storage, tracking_uri=tracking_uri,
            experiment=args.experiment, name=name, cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial, workers_per_trial=args.workers_per_trial,
            max_concurrent=args.max_concurrent, address=args.address,
            trial_backend=args.trial_backend or ("local" if args.scale == "smoke" else "train"))
        reference = _reference(table, args, root, opts.overrides)
        with contextlib.redirect_stdout(sys.stderr):  # Tune's and MLflow's own lines
            summary = run_search(opts, log=log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = report.row_results(table, summary["trials"])
    seconds = round(time.perf_counter() - t0, 1)
    command = "python benchmarks/paper_tables.py " + shlex.join(argv)
    heading = (f"{table.title} — {args.scale} scale, {args.seeds} seed{'s' * (args.seeds > 1)}, "
               f"{len(summary['trials'])} run{'s' * (len(summary['trials']) != 1)} in {seconds:.0f} s wall")
    text = report.markdown(table, rows, heading, notes(table, args, data_note, opts.overrides)
                           + [f"Command: `{command}`; MLflow parent run {summary['parent_run_id']} "
                              f"(experiment `{args.experiment}`)."], reference)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    client = MlflowClient(tracking_uri=tracking_uri)
    client.log_text(summary["parent_run_id"], text, "paper_table.md")
    client.set_tag(summary["parent_run_id"], "igan.paper_table", f"{table.name} {args.scale}")
    per_run = [_with_split_std(client, t, table) for t in summary["trials"]]
    return {"benchmark": "paper_tables", "table": table.name, "scale": args.scale, "seeds": args.seeds,
            "data": data_note, "unit": table.unit, "rows": rows, "reference": reference, "runs": per_run,
            "failed_runs": sum(t["status"] != "TERMINATED" for t in summary["trials"]),
            "parent_run_id": summary["parent_run_id"], "experiment": args.experiment,
            "tracking_uri": summary["tracking_uri"], "out": str(out), "search_seconds": summary.get("seconds"),
            "seconds": seconds, "command": command, "markdown": text}


def main(argv: list[str] | None = None) -> int:
    from pipelines.errors import UserError
    from pipelines.tune import SearchInterrupted

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        result = run(args, argv)
    except (UserError, ValueError) as exc:
        print(f"paper_tables: {exc}", file=sys.stderr)
        return 2
    except SearchInterrupted as exc:
        print(f"paper_tables: {exc}", file=sys.stderr)
        return 130
    print(result.pop("markdown"), flush=True)
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
