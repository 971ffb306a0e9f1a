"""Tracking-server credentials work and never show: a URI's ``user:password@``, and
``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``/``_TOKEN`` from the environment, reach the server, while
every message, log line, ``--json`` output, MLflow param and tag, job record and storage file shows
``***`` (or nothing) in their place.

Here: the redaction functions and the tracker; ``tests/e2e/test_credentials.py`` runs the jobs.
"""
from __future__ import annotations

import json

import pytest
from helpers.auth_proxy import PASSWORD, TOKEN, USER

from pipelines import defaults

TINY_RING8 = ["train.epochs=1", "train.steps_per_epoch=3", "eval.every=1", "train.checkpoint_every=1",
              "eval.num_samples=200", "eval.grid_size=4"]
SECRETS = (PASSWORD, TOKEN)


# -- the helpers (fast) --------------------------------------------------------------------------------
@pytest.mark.parametrize("uri, shown, stored", [
    ("http://user:pw@127.0.0.1:5000", "http://user:***@127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("https://user:p@ss:w%2Frd@mlflow.example.com/", "https://user:***@mlflow.example.com/",
     "https://mlflow.example.com/"),  # a raw "@" in the password: split at the last one, as urllib does
    ("https://tok3n@mlflow.example.com", "https://***@mlflow.example.com", "https://mlflow.example.com"),
    ("postgresql://u:pw@db:5432/mlflow?sslmode=require&password=pw2",
     "postgresql://u:***@db:5432/mlflow?sslmode=require&password=***", "postgresql://db:5432/mlflow?sslmode=require"),
    ("mssql+pyodbc://db/mlflow?odbc_connect=DRIVER%3Dx%3BPWD%3Dpw%3B",
     "mssql+pyodbc://db/mlflow?odbc_connect=DRIVER%3Dx%3BPWD%3D***%3B", "mssql+pyodbc://db/mlflow"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("sqlite:////home/me/.igan/mlflow.db", "sqlite:////home/me/.igan/mlflow.db", "sqlite:////home/me/.igan/mlflow.db"),
])
def test_redact_and_strip(uri, shown, stored):
    assert defaults.redact_uri(uri) == shown
    assert defaults.strip_credentials(uri) == stored


def test_redact_text_scrubs_uris_and_environment_secrets(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "env-pw-123")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "ab")  # too short to scrub without garbling the text
    text = "API request to http://u:pw@h:1/api/2.0/x failed (password env-pw-123); see a@b.c"
    assert defaults.redact_text(text) == "API request to http://u:***@h:1/api/2.0/x failed (password ***); see a@b.c"


def test_shown_uris_are_redacted():
    from pipelines.train import run_url

    assert defaults.ui_command("http://u:pw@h:5000") == "open http://u:***@h:5000 in a browser"
    assert defaults.ui_command("postgresql://u:pw@h/db") == "mlflow ui --backend-store-uri postgresql://u:***@h/db"
    assert run_url("http://u:pw@h:5000/", "1", "abc") == "http://u:***@h:5000/#/experiments/1/runs/abc"


def test_resume_takes_credentials_from_the_flag_or_the_environment(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    stored = "http://h:5000"
    assert defaults.resume_tracking_uri("http://u:pw@other:1", stored) == "http://u:pw@other:1"
    assert defaults.resume_tracking_uri(None, stored) == stored
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://u:pw@h:5000")
    assert defaults.resume_tracking_uri(None, stored) == "http://u:pw@h:5000"  # the same store, with credentials
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://u:pw@elsewhere:5000")
    assert defaults.resume_tracking_uri(None, stored) == stored  # the job's store, not another one


def test_tracker_redacts_params_tags_and_failure_reasons(tmp_path):
    from mlflow import MlflowClient

    from pipelines.tracking import FAILURE_TAG, RunTracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    leaky = f"http://{USER}:{PASSWORD}@127.0.0.1:1"
    with RunTracker(uri, "redact", tags={"origin": leaky}) as tracker:
        tracker.log_params({"job.tracking": leaky})
        tracker.set_tags({"note": f"copied from {leaky}/x"})
        tracker.fail(f"MlflowException: API request to {leaky}/api/2.0/mlflow/runs/get failed")
    run = MlflowClient(uri).get_run(tracker.run_id)
    values = {**run.data.params, **run.data.tags}
    assert PASSWORD not in json.dumps(values)
    assert values["job.tracking"] == f"http://{USER}:***@127.0.0.1:1" and "***" in values[FAILURE_TAG]
    assert values["origin"] == f"http://{USER}:***@127.0.0.1:1"


# -- end to end against a server that checks credentials ------------------------------------------------
