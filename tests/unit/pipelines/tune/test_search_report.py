"""The report ``igan tune`` attaches to its parent run (``report.html``: the best trials compared),
against a local sqlite store; and that a report that cannot be made costs the search one log line."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from helpers.report_runs import log_report_run

from pipelines.tracking import RunTracker
from pipelines.tune import champion

SEARCH = SimpleNamespace(metric="val_ssl_error", mode="min")


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_report_of_the_best_trials_on_the_parent_run(store, tmp_path, monkeypatch):
    monkeypatch.setattr(champion, "REPORT_TRIALS", 2)
    trials = [log_report_run(store, "search", f"trial-{i}", quality=q) for i, q in enumerate((0.1, 0.5, 0.9))]
    rows = [{"trial": f"t{i}", "run_id": run_id} for i, run_id in enumerate(trials)]
    rows.append({"trial": "failed-early", "run_id": None})
    lines: list[str] = []
    with RunTracker(store, "search", run_name="parent") as parent:
        assert champion.attach_report(parent, rows, SEARCH, store, "s1", lines.append) == "report.html"
    assert lines == []
    html = open(parent.client.download_artifacts(parent.run_id, "report.html", str(tmp_path))).read()
    assert trials[0] in html and trials[1] in html and trials[2] not in html  # best two only
    assert "igan tune s1: best 2 of 4 trials by val_ssl_error (min)" in html
    assert html.count('<figure data-step=') == 2 * 3  # every grid of these short runs (3 <= REPORT_IMAGES)


def test_a_failed_report_is_one_line_and_no_artifact(store, tmp_path):
    lines: list[str] = []
    with RunTracker(store, "search", run_name="parent") as parent:
        rows = [{"trial": "t0", "run_id": "0" * 32}]  # a run the store does not have
        assert champion.attach_report(parent, rows, SEARCH, store, "s1", lines.append) is None
        assert champion.attach_report(parent, [{"trial": "t0", "run_id": None}], SEARCH, store, "s1",
                                      lines.append) is None  # nothing to compare: silent
    assert len(lines) == 1 and "no report.html for the search" in lines[0] and "0" * 32 in lines[0]
    assert [f.path for f in parent.client.list_artifacts(parent.run_id)] == []
