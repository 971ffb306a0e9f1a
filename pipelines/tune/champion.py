"""The end of a finished search: the best trial (chosen on the validation metric, never on the
test split) gets its checkpoint logged and its models registered with the alias ``champion``; the
results table is printed and logged with the plot and a report comparing the best trials
(``report.html``) on the parent run."""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any, Callable

from pipelines import defaults
from pipelines.errors import UserError
from pipelines.tune.options import TuneOptions
from pipelines.tune.results import fmt, format_table, plot_results, reported_metric, results_csv
from pipelines.tune.search import Search, trial_config

CHAMPION = "champion"
#: The search report's file name on the parent run.
REPORT_ARTIFACT = "report.html"
#: Trials the search report compares, best first: it runs at the end of every search, and a page
#: overlaying more curves would be neither cheap to make nor readable.
REPORT_TRIALS = 10
#: Sample grids per trial in the search report (first, last and two between).
REPORT_IMAGES = 4


def best_row(rows: list[dict], search: Search, where: str) -> dict:
    """The row with the best finite metric; sorts ``rows`` best first. UserError when no trial
    reported the metric (``where``: the search folder, for the message)."""
    sign = 1 if search.mode == "min" else -1
    ok = [r for r in rows if math.isfinite(r[search.metric])]
    if not ok:
        raise UserError(f"no trial reported {search.metric}; see the trial errors in {where}")
    rows.sort(key=lambda r: (not math.isfinite(r[search.metric]), sign * r[search.metric]
                             if math.isfinite(r[search.metric]) else 0))
    return min(ok, key=lambda r: sign * r[search.metric])


def crown(parent, search: Search, rows: list[dict], opts: TuneOptions, tracking_uri: str, name: str, path: str,
          log: Callable[[str], None]) -> dict:
    """Log the results on ``parent`` (the search's run), register the best trial's models with the
    alias ``champion`` and return the search's summary (without timing)."""
    best = best_row(rows, search, path)
    for line in format_table(rows, search).splitlines():
        log(line)
    parent.log_text(results_csv(rows, search), "tune_results.csv")
    png = plot_results(rows, search, best)
    if png is not None:
        parent.log_artifact(png, "plots")
    report = attach_report(parent, rows, search, tracking_uri, name, log)
    best_cfg = trial_config(search.base, best["_result"].config, search.keys, search.tied, search.overlays)
    model_uris = _register(parent, best, best_cfg, opts, tracking_uri)
    varied = {k: best[k] for k in search.keys}
    test_metric = reported_metric(search.metric)
    parent.log_metrics({f"best_{search.metric}": best[search.metric], "trials": len(rows)}, step=0)
    parent.set_tags({"igan.tune.state": "finished", "igan.tune.best_trial": best["trial"],
                     "igan.tune.best_run_id": best["run_id"] or "", "igan.tune.best_config": json.dumps(varied),
                     "igan.registered_models": " ".join(model_uris.values())})
    log(f"igan tune: best trial {best['trial']} (chosen on {search.metric}): {search.metric} "
        f"{best[search.metric]:.4g}, {test_metric} {best[test_metric]:.4g}, with "
        + ", ".join(f"{k}={fmt(v)}" for k, v in varied.items()))
    for kind, uri in model_uris.items():
        log(f"  {kind + ':':13} {uri} (alias {CHAMPION})")
    log(f"  MLflow parent run: {parent.run_id} ('{name}') in experiment '{opts.experiment}' at {defaults.redact_uri(tracking_uri)}")
    if report:
        log(f"  report:       {report} on the parent run (best {min(len(rows), REPORT_TRIALS)} trials compared)")
    log(f"  search folder: {path}")
    return {
        "name": name, "space": search.space_name, "preset": search.preset, "scheduler": opts.scheduler,
        "metric": search.metric, "mode": search.mode, "best_value": best[search.metric],
        "best_test_value": best[test_metric], "best_trial": best["trial"], "best_run_id": best["run_id"],
        "best_config": varied, "best_full_config": best_cfg.flat(), "model_uris": model_uris,
        "parent_run_id": parent.run_id, "experiment": opts.experiment,
        "tracking_uri": defaults.redact_uri(tracking_uri), "path": path, "report_artifact": report,
        "trials": [{k: v for k, v in r.items() if k != "_result"} for r in rows],
    }


def attach_report(parent, rows: list[dict], search: Search, tracking_uri: str, name: str,
                  log: Callable[[str], None]) -> str | None:
    """Log :data:`REPORT_ARTIFACT`, the ``igan report`` page of the best :data:`REPORT_TRIALS`
    trials' child runs (``rows`` best first), on ``parent``; returns the artifact's name, or None
    when there was none to make or it failed. A failure is one log line: the search itself has
    succeeded and keeps its results."""
    run_ids = [r["run_id"] for r in rows if r.get("run_id")][:REPORT_TRIALS]
    if not run_ids:
        return None
    shown = f"best {len(run_ids)} of {len(rows)}" if len(rows) > len(run_ids) else f"all {len(run_ids)}"
    title = f"igan tune {name}: {shown} trials by {search.metric} ({search.mode})"
    try:
        from pipelines.report.build import write_report

        with tempfile.TemporaryDirectory(prefix="igan-tune-report-") as tmp:
            path, _ = write_report(run_ids, tracking_uri, Path(tmp) / REPORT_ARTIFACT, title=title,
                                   max_images=REPORT_IMAGES, client=parent.client)
            parent.log_artifact(path)
    except Exception as exc:  # noqa: BLE001 - the report is a convenience; the search's results stand
        from pipelines.errors import first_line

        log(f"igan tune: no {REPORT_ARTIFACT} for the search: {type(exc).__name__}: "
            f"{defaults.redact_text(first_line(str(exc)))}")
        return None
    return REPORT_ARTIFACT


def _register(parent, best: dict, cfg, opts: TuneOptions, tracking_uri: str) -> dict[str, Any]:
    """Log the best trial's checkpoint on its child run and, unless ``--no-register``, register its
    models with the alias ``champion``; returns the model URIs."""
    ckpt = best["_result"].checkpoint
    if ckpt is None or not best["run_id"]:
        return {}
    from igan.checkpoint import read_checkpoint
    from igan.trainer import Trainer

    with ckpt.as_directory() as d:
        state, _ = read_checkpoint(d)
        parent.client.log_artifacts(best["run_id"], d, "checkpoint")
    if not opts.register:
        return {}
    from pipelines.registry import register_models

    trainer = Trainer(cfg, device="cpu")
    trainer.load_state_dict(state)
    uris = register_models(best["run_id"], trainer, cfg, tracking_uri, alias=CHAMPION)
    parent.client.set_tag(best["run_id"], "igan.tune.champion", "true")
    return uris
