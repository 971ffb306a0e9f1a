"""``igan tune`` end to end against a real ``mlflow server`` and a small local Ray: a 4-trial ASHA
search on digits that is stopped after its first two trials and resumed (finished trials are not
run again), child runs, the champion alias, the varied values each trial logged; one trial through
the Ray Train backend; a short PBT search.
"""
from __future__ import annotations

import csv
import io
import json
import math
import time

import pytest
from helpers.faults import StopSearchAfter

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("igan_home")]

TINY = ["eval.scorer=none", "train.epochs=2", "train.steps_per_epoch=5", "eval.every=1", "eval.grid_size=4",
        "model.d_widths=[64,32,32]", "model.g_widths=[32]", "techniques.wn_init_examples=100"]
#: Seed 1 draws 4 trials with 4 smoothing targets, MBD on and off, and 2, 5, 10 labels per class.
SEED = "1"


def _client(tracking):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking, registry_uri=tracking)


def _igan(argv: list[str], hooks=None) -> int:
    from pipelines.cli import main

    return main(argv, hooks=hooks)


def _args(tmp_path, tracking, data, name, *extra, sets=TINY):
    return (["tune", "digits", "--max-concurrent", "1", "--cpus-per-trial", "1", "--data", data,
             "--tracking-uri", tracking, "--storage", str(tmp_path / "ray"), "--name", name,
             "--experiment", "tune-e2e"] + list(extra) + [a for s in sets for a in ("--set", s)])


def _children(client, parent_run_id: str) -> dict:
    exp = client.get_experiment_by_name("tune-e2e")
    runs = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'",
                              max_results=100)
    return {r.data.tags["igan.trial_id"]: r for r in runs}


def _history(client, run_id: str, key: str = "val_ssl_error") -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


def test_asha_search_stopped_and_resumed(ray_local, tmp_path, tracking_server, digits_data, capsys):
    tracking = tracking_server
    client = _client(tracking)
    rc = _igan(_args(tmp_path, tracking, digits_data, "s4", "--num-samples", "4", "--seed", SEED,
                     "--trial-backend", "local"),
               hooks=[StopSearchAfter(2)])  # the driver stops like Ctrl+C after 2 trials
    assert rc == 130, capsys.readouterr().err[-3000:]
    assert "--resume" in capsys.readouterr().err
    record = json.loads((tmp_path / "ray" / "s4" / "igan_tune.json").read_text())
    parent_id = record["parent_run_id"]
    assert client.get_run(parent_id).data.tags["igan.tune.state"] == "interrupted"
    before = _children(client, parent_id)
    done_before = {tid: r for tid, r in before.items() if r.info.status == "FINISHED"}
    assert len(done_before) >= 2, {t: (r.info.status, r.data.tags.get("igan.failure_reason"))
                                   for t, r in before.items()}
    hist_before = {tid: _history(client, r.info.run_id) for tid, r in done_before.items()}
    for steps in hist_before.values():
        assert steps and len(steps) == len(set(steps))

    rc = _igan(["tune", "digits", "--resume", "--name", "s4", "--storage", str(tmp_path / "ray"),
                "--tracking-uri", tracking, "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err[-3000:]
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert summary["parent_run_id"] == parent_id and len(summary["trials"]) == 4

    # One child run per trial, all finished; the trials finished before the stop were not rerun.
    children = _children(client, parent_id)
    assert len(children) == 4 and {t["trial"] for t in summary["trials"]} == set(children)
    assert all(r.info.status == "FINISHED" for r in children.values())
    for tid, run in done_before.items():
        assert children[tid].info.run_id == run.info.run_id
        assert _history(client, run.info.run_id) == hist_before[tid], "a finished trial ran again"
        assert "igan.resumed" not in children[tid].data.tags

    # The trials really used different smoothing / MBD / label values: read back from their params.
    params = {tid: r.data.params for tid, r in children.items()}
    for tid, p in params.items():
        row = next(t for t in summary["trials"] if t["trial"] == tid)
        assert float(p["techniques.real_label"]) == pytest.approx(row["techniques.real_label"])
        assert p["techniques.minibatch_discrimination"] == str(row["techniques.minibatch_discrimination"])
        assert int(p["data.labels_per_class"]) == row["data.labels_per_class"]
        assert p["optim.lr_g"] == p["optim.lr_d"]  # tied
        assert p["eval.scorer"] == "none" and p["train.epochs"] == "2"  # --set reached every trial
    assert len({p["techniques.real_label"] for p in params.values()}) >= 2
    assert {p["techniques.minibatch_discrimination"] for p in params.values()} == {"True", "False"}
    assert len({p["data.labels_per_class"] for p in params.values()}) >= 2

    # The champion alias points at the best trial's versions; the best is the minimum logged
    # validation error (the test split is reported, never used to choose).
    final = {tid: client.get_metric_history(r.info.run_id, "val_ssl_error")[-1].value for tid, r in children.items()}
    best_tid = min(final, key=final.get)
    assert summary["best_trial"] == best_tid and summary["best_run_id"] == children[best_tid].info.run_id
    assert math.isclose(summary["best_value"], final[best_tid])
    assert set(summary["model_uris"]) == {"generator", "classifier"}
    for kind, uri in summary["model_uris"].items():
        name, version = uri[len("models:/"):].split("/")
        mv = client.get_model_version_by_alias(name, "champion")
        assert mv.version == version and mv.run_id == summary["best_run_id"]
    assert set(summary["best_config"]) >= {"techniques.real_label", "techniques.minibatch_discrimination",
                                           "data.labels_per_class"}

    # Parent run: finished, with the results table (CSV) and the plot (PNG).
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["igan.tune.state"] == "finished"
    table = list(csv.DictReader(io.StringIO(open(client.download_artifacts(parent_id, "tune_results.csv",
                                                                           str(tmp_path))).read())))
    assert {r["trial"] for r in table} == set(children)
    assert [f.path for f in client.list_artifacts(parent_id, "plots")] == ["plots/val_ssl_error_vs_params.png"]
    # and the report comparing the trials (all 4: fewer than the report's limit), best first
    assert summary["report_artifact"] == "report.html"
    page = open(client.download_artifacts(parent_id, "report.html", str(tmp_path))).read()
    order = sorted(children.values(), key=lambda r: page.index(f'data-run-id="{r.info.run_id}"'))
    assert order[0].info.run_id == summary["best_run_id"]
    assert "all 4 trials by val_ssl_error" in page and page.count('data-series="') >= 4
    assert "trial" in out.err and "val_ssl_error" in out.err  # the table was printed (stderr with --json)


def _reserved_groups(ray) -> list:
    return [g for g in ray.util.placement_group_table().values() if g["state"] == "CREATED"]


def test_train_backend_trial(ray_local, tmp_path, tracking_server, digits_data, capsys):
    """One trial the default way: the Tune trial drives a Ray Train TorchTrainer. ASHA stops it at
    max_t inside its last report, while the TorchTrainer still runs: the worker group's reservation
    must not outlive the trial (it would hold the CPUs of every later trial and job)."""
    client = _client(tracking_server)
    rc = _igan(_args(tmp_path, tracking_server, digits_data, "train1", "--num-samples", "1",
                     "--no-register", "--json"))
    out = capsys.readouterr()
    assert rc == 0, out.err[-3000:]
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert summary["model_uris"] == {} and 0.0 <= summary["best_value"] <= 1.0
    run = client.get_run(summary["best_run_id"])
    assert run.info.status == "FINISHED" and run.data.params["tune.trial_backend"] == "train"
    assert _history(client, run.info.run_id) == [1, 2] and _history(client, run.info.run_id, "loss_d") == [1, 2]
    deadline = time.monotonic() + 60  # removal is asynchronous
    while _reserved_groups(ray_local) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _reserved_groups(ray_local)


def test_train_backend_two_trials_at_once_on_two_cpus(ray_local, tmp_path, tracking_server, digits_data, capsys):
    """The default backend with 2 trials at once on this 2-CPU Ray: each trial's driver and worker
    together reserve --cpus-per-trial, so both worker groups are placed at once. (A driver's 0.01 CPU
    on top of a 1-CPU worker left the second worker group waiting for the first trial's CPU, Ray
    Train retrying its start on WorkerGroupStartupTimeoutError.) Ray's placement group table shows
    it: every placement group of the search was placed at its first scheduling attempt."""
    before = set(ray_local.util.placement_group_table())
    args = _args(tmp_path, tracking_server, digits_data, "two", "--num-samples", "2", "--scheduler", "fifo",
                 "--no-register", "--json")
    args[args.index("--max-concurrent") + 1] = "2"
    rc = _igan(args)
    out = capsys.readouterr()
    assert rc == 0, out.err[-3000:]
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert [t["status"] for t in summary["trials"]] == ["TERMINATED"] * 2
    assert "up to 2 at once" in out.err
    groups = {pg: t for pg, t in ray_local.util.placement_group_table().items() if pg not in before}
    workers = [t for t in groups.values() if list(t["bundles"].values()) != [{"CPU": 0.01}]]  # not a trial driver
    assert len(workers) == 2, groups  # one worker group per trial: none timed out and was made again
    assert all(t["stats"]["scheduling_attempt"] == 1 for t in groups.values()), groups


def test_pbt_search(ray_local, tmp_path, tracking_server, digits_data, capsys):
    """PBT over 4 short trials, two at a time: exploit/explore through the local backend's checkpoints."""
    sets = [s for s in TINY if not s.startswith(("train.epochs", "train.steps"))] + ["train.epochs=3",
                                                                                      "train.steps_per_epoch=3"]
    args = _args(tmp_path, tracking_server, digits_data, "pbt", "--num-samples", "4", "--scheduler", "pbt",
                 "--grace-epochs", "1", "--trial-backend", "local", "--no-register", "--json", sets=sets)
    args[args.index("--max-concurrent") + 1] = "2"
    rc = _igan(args)
    out = capsys.readouterr()
    assert rc == 0, out.err[-3000:]
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert len(summary["trials"]) == 4
    assert all(t["status"] == "TERMINATED" and t["epoch"] == 3 for t in summary["trials"])


@pytest.fixture
def tracking_server(mlflow_server):
    return mlflow_server
