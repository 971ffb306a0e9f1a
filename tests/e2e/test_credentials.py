"""Jobs with tracking-server credentials: they work and never show: a URI's ``user:password@``, and
``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``/``_TOKEN`` from the environment, reach the server, while
every message, log line, ``--json`` output, MLflow param and tag, job record and storage file shows
``***`` (or nothing) in their place.

The end-to-end tests run the real CLI in subprocesses against a real ``mlflow server`` behind
:mod:`auth_proxy`, which refuses requests without the right credentials, so a run that finishes
proves they were sent.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers.auth_proxy import PASSWORD, TOKEN, USER, AuthProxy


from helpers import REPO  # noqa: E402
TINY_RING8 = ["train.epochs=1", "train.steps_per_epoch=3", "eval.every=1", "train.checkpoint_every=1",
              "eval.num_samples=200", "eval.final_num_samples=0", "eval.grid_size=4"]
SECRETS = (PASSWORD, TOKEN)


# -- the helpers (fast) --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def guarded(own_mlflow_server):
    """``(proxy, upstream)``: a real mlflow server behind credentials, and its own address (for
    reading what was stored without going through the proxy). The module's own server: the models
    registered here would shift the versions tests/e2e/test_registry.py expects."""
    proxy = AuthProxy(own_mlflow_server)
    yield proxy, own_mlflow_server
    proxy.close()


@pytest.fixture
def ray_tmp():
    """A short temporary folder for the Ray the commands start (``RAY_TMPDIR``; Unix socket paths
    must stay short), so its session logs can be searched too."""
    folder = Path(tempfile.mkdtemp(prefix="igan-rt-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def igan(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``igan ARGV`` in a subprocess with a clean MLflow environment plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS"))}
    base.update(PYTHONPATH=str(REPO), MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false", **(env or {}))
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *argv], env=base, cwd=cwd, capture_output=True,
                          text=True, timeout=900)


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} in {where}:\n{text[-3000:]}"


def assert_no_secret_in_files(root: Path) -> None:
    """No secret in any regular file below ``root`` (job records, Ray's run folders and logs); and
    there are files to search."""
    files = [path for path in root.rglob("*") if path.is_file() and not path.is_symlink()]
    assert files, f"nothing written under {root}"
    for path in files:
        assert_no_secret(str(path), path.read_bytes().decode("latin-1"))


def run_values(client, run_id: str) -> str:
    """The run's params, tags and run name as one text."""
    run = client.get_run(run_id)
    return json.dumps({"params": run.data.params, "tags": run.data.tags, "name": run.info.run_name})


@pytest.mark.slow
def test_train_credentials_work_and_never_show(guarded, tmp_path, igan_home, ray_tmp):
    from mlflow import MlflowClient

    proxy, upstream = guarded
    secret_uri = proxy.with_credentials()
    storage = tmp_path / "runs"
    sets = [a for s in TINY_RING8 for a in ("--set", s)]
    common = ["--storage", str(storage), "--name", "cred-job", "--workers", "1", "--threads", "1",
              "--cpus-per-worker", "1", "--experiment", "credentials"]

    # 1. train with user:password@ in --tracking-uri
    res = igan("train", "--preset", "ring8", "--tracking-uri", secret_uri, "--json", *common, *sets, cwd=tmp_path,
               env={"RAY_TMPDIR": str(ray_tmp)})
    assert res.returncode == 0, res.stderr[-3000:]
    assert_no_secret("igan train's output", res.stdout + res.stderr)
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    shown = f"http://{USER}:***@{proxy.url.removeprefix('http://')}"
    assert summary["tracking_uri"] == shown and summary["ui"] == f"open {shown} in a browser"
    assert summary["run_url"].startswith(shown + "/#/experiments/")
    assert f"tracking URI: {shown}" in res.stderr  # the summary lines (--json sends them to stderr)
    assert summary["model_uris"]["generator"].startswith("models:/igan-ring8-generator/")

    record = json.loads((storage / "cred-job" / "igan_job.json").read_text())
    assert record["tracking_uri"] == proxy.url  # stored without the credentials
    assert_no_secret_in_files(storage)  # the record, Ray Train's run folder, checkpoints
    assert list(ray_tmp.rglob("logs/*.out")), "Ray wrote no logs where the test looks"
    assert_no_secret_in_files(ray_tmp)  # Ray's session logs
    client = MlflowClient(upstream, registry_uri=upstream)  # straight to the server: no credentials needed
    assert_no_secret("the MLflow run", run_values(client, summary["run_id"]))
    name, version = summary["model_uris"]["generator"].split("/")[1:]
    assert_no_secret("the model version", json.dumps(client.get_model_version(name, version).tags))

    # 2. igan models with the URI's credentials, then with a token from the environment
    res = igan("models", "--tracking-uri", secret_uri, "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    assert_no_secret("igan models' output", res.stdout + res.stderr)
    listing = json.loads(res.stdout.strip().splitlines()[-1])
    assert listing["tracking_uri"] == shown and "igan-ring8-generator" in {m["name"] for m in listing["models"]}
    res = igan("models", "--json", env={"MLFLOW_TRACKING_URI": proxy.url, "MLFLOW_TRACKING_TOKEN": TOKEN})
    assert res.returncode == 0, res.stderr[-3000:]
    assert_no_secret("igan models' output (token)", res.stdout + res.stderr)

    # 3. --resume: the record keeps no password; the one in the environment is used, never shown
    env = {"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": PASSWORD, "RAY_TMPDIR": str(ray_tmp)}
    res = igan("train", "--resume", "--json", *common, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert_no_secret("igan train --resume's output", res.stdout + res.stderr)
    resumed = json.loads(res.stdout.strip().splitlines()[-1])
    assert resumed["run_id"] == summary["run_id"] and resumed["tracking_uri"] == proxy.url
    assert_no_secret_in_files(storage)
    assert_no_secret_in_files(ray_tmp)
    assert_no_secret("the resumed MLflow run", run_values(client, summary["run_id"]))

    # 4. without credentials the resumed job is refused in one line, naming the store
    res = igan("train", "--resume", *common)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "HTTP 401" in res.stderr
    assert proxy.url in res.stderr


@pytest.mark.slow
def test_tune_credentials_work_and_never_show(guarded, tmp_path, igan_home, ray_tmp):
    """The search's trials open their child runs with the credentials (the Tune trial processes get
    the real URI), while the search record, Tune's experiment folder and Ray's logs never hold them."""
    from mlflow import MlflowClient

    proxy, upstream = guarded
    storage = tmp_path / "searches"
    sets = [a for s in TINY_RING8 for a in ("--set", s)]
    res = igan("tune", "ring8", "--num-samples", "1", "--trial-backend", "local", "--scheduler", "fifo",
               "--max-concurrent", "1", "--tracking-uri", proxy.with_credentials(), "--storage", str(storage),
               "--name", "cred-search", "--experiment", "credentials-tune", "--json", *sets, cwd=tmp_path,
               env={"RAY_TMPDIR": str(ray_tmp)})
    assert res.returncode == 0, res.stderr[-3000:]
    assert_no_secret("igan tune's output", res.stdout + res.stderr)
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["tracking_uri"] == f"http://{USER}:***@{proxy.url.removeprefix('http://')}"
    assert summary["model_uris"]["generator"].startswith("models:/igan-ring8-generator/")
    record = json.loads((storage / "cred-search" / "igan_tune.json").read_text())
    assert record["tracking_uri"] == record["options"]["tracking_uri"] == proxy.url
    assert_no_secret_in_files(storage)  # the record, Tune's experiment state, trial folders
    assert_no_secret_in_files(ray_tmp)
    client = MlflowClient(upstream)
    for run_id in (summary["parent_run_id"], summary["best_run_id"]):
        assert_no_secret(f"MLflow run {run_id}", run_values(client, run_id))

    # resuming without credentials is refused in one line: the record did not keep them
    res = igan("tune", "ring8", "--resume", "--name", "cred-search", "--storage", str(storage))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "HTTP 401" in res.stderr
