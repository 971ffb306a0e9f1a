"""``igan report`` bad input through the CLI: exit status 2 and one line on stderr naming what is
wrong, never a traceback. Against a local sqlite store (no server) and a port nothing listens on."""
from __future__ import annotations

import pytest
from helpers import free_port
from helpers.cli_run import run_cli

pytestmark = pytest.mark.usefixtures("igan_home")


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory) -> tuple[str, str]:
    """``(tracking URI, run id)`` of a sqlite store holding one finished run."""
    from pipelines.tracking import RunTracker

    uri = f"sqlite:///{tmp_path_factory.mktemp('report_store') / 'mlflow.db'}"
    with RunTracker(uri, "report-cli", run_name="only") as tracker:
        tracker.log_metrics({"val_ssl_error": 0.5}, step=1)
    return uri, tracker.run_id


def _expect_one_line(capsys, argv: list[str], *words: str) -> str:
    code, out, err = run_cli(capsys, "report", *argv)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("igan report: error: ") and all(w in err for w in words), err
    return err


def test_unknown_run_id(sqlite_store, tmp_path, capsys):
    uri, run_id = sqlite_store
    missing = "0" * 32
    _expect_one_line(capsys, [run_id, missing, "--out", str(tmp_path / "r.html"), "--tracking-uri", uri],
                     f"no MLflow run '{missing}'", "sqlite:///")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("bad, words", [
    ("runs:/" + "f" * 32 + "/generator", ["no MLflow run '" + "f" * 32 + "'"]),
    ("models:/igan-nothing-generator@champion", ["no registered model 'igan-nothing-generator'"]),
    ("models:/igan-nothing-generator/3", ["no registered model"]),
    ("not a run", ["cannot read 'not a run'", "models:/NAME@ALIAS"]),
])
def test_uris_that_name_no_run(sqlite_store, tmp_path, capsys, bad, words):
    uri, _ = sqlite_store
    _expect_one_line(capsys, [bad, "--out", str(tmp_path / "r.html"), "--tracking-uri", uri], *words)


def test_unreachable_tracking_server(tmp_path, capsys):
    uri = f"http://127.0.0.1:{free_port()}"
    _expect_one_line(capsys, ["a" * 32, "--out", str(tmp_path / "r.html"), "--tracking-uri", uri],
                     "cannot reach the MLflow server", uri)


def test_credentials_are_not_shown(tmp_path, capsys):
    uri = f"http://me:s3cret-pw@127.0.0.1:{free_port()}"
    err = _expect_one_line(capsys, ["a" * 32, "--out", str(tmp_path / "r.html"), "--tracking-uri", uri],
                           "me:***@")
    assert "s3cret-pw" not in err


def test_missing_sqlite_store(tmp_path, capsys):
    _expect_one_line(capsys, ["a" * 32, "--out", str(tmp_path / "r.html"),
                              "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"], "no MLflow store")
    assert not (tmp_path / "none.db").exists()


def _under_a_file(tmp):
    (tmp / "file").write_text("x")
    return tmp / "file" / "r.html"


@pytest.mark.parametrize("make_out, words", [
    (lambda tmp: tmp, ["is a folder"]),
    (_under_a_file, ["cannot be written"]),
])
def test_unwritable_out(sqlite_store, tmp_path, capsys, make_out, words):
    uri, run_id = sqlite_store
    out = make_out(tmp_path)
    _expect_one_line(capsys, [run_id, "--out", str(out), "--tracking-uri", uri], "--out", *words)


def test_max_images_out_of_range(sqlite_store, tmp_path, capsys):
    uri, run_id = sqlite_store
    _expect_one_line(capsys, [run_id, "--out", str(tmp_path / "r.html"), "--tracking-uri", uri,
                              "--max-images", "-1"], "--max-images")


def test_a_run_without_images_or_steps_still_makes_a_page(sqlite_store, tmp_path, capsys):
    uri, run_id = sqlite_store
    out = tmp_path / "deep" / "r.html"
    code, stdout, err = run_cli(capsys, "report", f"runs:/{run_id}", run_id, "--out", str(out),
                                "--tracking-uri", uri)
    assert code == 0, err
    assert stdout.strip().splitlines()[-1] == str(out)
    html = out.read_text()
    assert html.count('class="run"') == 1  # one run named twice is shown once
    assert "No sample images." in html and "No metric was logged at two or more steps." in html
    assert '<tr data-metric="val_ssl_error" data-split="validation">' in html
