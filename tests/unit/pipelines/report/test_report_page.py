"""The report page from plain run data (no MLflow): which charts and in what order, per-rank
metrics in one chart, long histories thinned, the final metrics named by their split, the
throughput summary, the config compared across runs, and a page that needs no network."""
from __future__ import annotations

import math
import re

import pytest

from pipelines.report import curves, summaries
from pipelines.report.collect import RunData, SampleImage, Target
from pipelines.report.page import Report, duration_text, image_scale, render

PNG = b"\x89PNG\r\n\x1a\nfake"


def _run(run_id: str, name: str, histories: dict, params: dict | None = None, images=(),
         target: Target | None = None) -> RunData:
    return RunData(target=target or Target(run_id, run_id), name=name, status="FINISHED", experiment="exp",
                   start_ms=1_700_000_000_000, end_ms=1_700_000_125_000, params=params or {},
                   histories=histories, images=list(images), image_counts={"samples": len(images)})


def _epochs(*values) -> list[tuple[int, float]]:
    return [(i + 1, float(v)) for i, v in enumerate(values)]


@pytest.fixture
def runs() -> list[RunData]:
    a = _run("a" * 32, "baseline", {
        "loss_d": _epochs(1, 0.8), "val_fid": _epochs(40, 30), "val_ssl_error": _epochs(0.3, 0.2),
        "val_inception_score": _epochs(2, 3), "test_ssl_error": [(2, 0.21)], "val_modes_captured": [(2, 9.0)],
        "step/images_per_s": [(s, 100.0 + s) for s in range(1, 6)], "step/step_time_s": [(1, 0.5), (2, 0.3)],
        "step/data_wait_fraction": [(1, 0.1), (2, 0.3)],
        "cuda_peak_mib_rank0": [(1, 100.0), (2, 120.0)], "cuda_peak_mib_rank1": [(1, 90.0), (2, 130.0)],
        "step/loss_d": [(1, 1.0), (2, 0.9)], "aaa_custom": _epochs(1, 2)},
        params={"optim.lr_g": "0.001", "data.dataset": "digits", "preset": "digits", "train.epochs": "2"},
        images=[SampleImage("samples", 1, "samples/epoch_0001.png", "image/png", PNG, 8, 8),
                SampleImage("samples", 2, "images/x.png", "image/png", PNG, 8, 8)])
    b = _run("b" * 32, "ablation", {
        "val_ssl_error": _epochs(0.4, math.nan, 0.25), "test_ssl_error": [(3, 0.3)],
        "test_inception_score": [(3, 3.5)]},
        params={"optim.lr_g": "0.0005", "data.dataset": "digits", "model.name": "mnist_mlp"},
        target=Target("models:/igan-digits-generator@champion", "b" * 32, "igan-digits-generator", "3"))
    return [a, b]


def test_charts_quality_first_then_validation_losses_others_and_steps(runs):
    titles = [c.title for c in curves.metric_charts(runs, ["baseline", "ablation"])]
    assert titles == ["val_ssl_error", "val_inception_score", "val_fid", "loss_d", "aaa_custom", "step/loss_d"]
    # one point is no curve: val_modes_captured and test_* are in the final table only


def test_each_chart_overlays_the_runs_that_logged_it(runs):
    charts = {c.title: c for c in curves.metric_charts(runs, ["baseline", "ablation"])}
    assert [s.label for s in charts["val_ssl_error"].series] == ["baseline", "ablation"]
    assert charts["val_ssl_error"].styles == [0, 1]
    assert [s.label for s in charts["val_fid"].series] == ["baseline"]
    assert charts["val_fid"].x_label == "epoch" and charts["step/loss_d"].x_label == "training step"
    assert len(charts["val_ssl_error"].series[1].points) == 2  # the NaN epoch is not drawn


def test_throughput_charts_and_ranks_in_one_chart(runs):
    charts = curves.throughput_charts(runs, ["baseline", "ablation"])
    assert [c.title for c in charts] == ["step/images_per_s", "step/step_time_s", "step/data_wait_fraction",
                                         "cuda_peak_mib_rank* (per rank)"]
    memory = charts[-1]
    assert [s.label for s in memory.series] == ["baseline · rank 0", "baseline · rank 1"]
    assert memory.styles == [0, 10]  # the run's colour, another dash


def test_split_rank():
    assert curves.split_rank("cuda_peak_mib_rank12") == ("cuda_peak_mib", 12)
    assert curves.split_rank("step/loss_d") == ("step/loss_d", None)


def test_long_histories_are_thinned_keeping_extremes():
    points = [(float(i), math.sin(i / 50.0)) for i in range(10_000)]
    points[5_000] = (5_000.0, 9.0)  # one spike
    points[7_000] = (7_000.0, math.nan)
    thinned = curves.thin(points, max_points=200)
    assert len(thinned) <= 200 and (5_000.0, 9.0) in thinned
    assert [x for x, _ in thinned] == sorted(x for x, _ in thinned)
    assert all(math.isfinite(y) for _, y in thinned)
    assert curves.thin(points[:50]) == points[:50]


def test_final_metrics_name_their_split_validation_first(runs):
    rows = summaries.final_metrics(runs)
    assert [(r.name, r.split) for r in rows] == [
        ("val_ssl_error", "validation"), ("val_inception_score", "validation"), ("val_fid", "validation"),
        ("val_modes_captured", "validation"), ("test_ssl_error", "test"), ("test_inception_score", "test")]
    assert rows[0].values == [(2, 0.2), (3, 0.25)]
    assert rows[-1].values == [None, (3, 3.5)]


def test_throughput_summary(runs):
    t = summaries.throughput(runs[0])
    assert (t.images_per_s, t.step_time_s, t.data_wait_fraction, t.peak_cuda_mib, t.steps) == \
        (103.0, 0.4, pytest.approx(0.2), 130.0, 5)
    assert summaries.throughput(runs[1]) == summaries.Throughput(None, None, None, None, 0)


def test_config_grouped_by_section_with_differences(runs):
    sections = summaries.config_sections(runs)
    assert [s for s, _ in sections] == ["data", "model", "optim", "train", "other"]
    rows = {r.key: r for _, section in sections for r in section}
    assert rows["optim.lr_g"].values == ["0.001", "0.0005"] and rows["optim.lr_g"].differs
    assert not rows["data.dataset"].differs
    assert rows["model.name"].values == [None, "mnist_mlp"] and rows["model.name"].differs


def test_run_labels_tell_runs_of_one_name_apart(runs):
    twin = _run("c" * 32, "baseline", {})
    assert summaries.run_labels(runs + [twin]) == ["baseline (aaaaaaaa)", "ablation", "baseline (cccccccc)"]


def test_duration_and_image_scale():
    assert duration_text(0, 5) == "-" and duration_text(1_000, None) == "-"
    assert duration_text(1_000, 4_200) == "3.2s" and duration_text(1_000, 124_000) == "2m03s"
    assert duration_text(0 + 1, 3_723_001) == "1h02m03s"
    assert image_scale(8) == 24 and image_scale(100) == 1 and image_scale(500) == 1


def test_page_is_self_contained_and_holds_every_section(runs):
    html = render(Report("igan report: test <run>", "http://user:***@mlflow:5000", 1_700_000_200_000, runs))
    assert "<title>igan report: test &lt;run&gt;</title>" in html
    for section in ("runs", "final", "curves", "throughput", "samples", "config"):
        assert f'id="sec-{section}"' in html
    assert html.count("<svg") == 10 and html.count('data-series="baseline"') >= 6
    assert html.count('data-series="ablation"') == 1
    assert html.count('src="data:image/png;base64,') == 2
    assert "igan-digits-generator v3" in html and "models:/igan-digits-generator@champion" in html
    assert "http://user:***@mlflow:5000" in html and "2m05s" in html
    assert '<tr data-metric="test_ssl_error" data-split="test">' in html
    assert 'class="differs" data-key="optim.lr_g"' in html and 'class="same" data-key="data.dataset"' in html
    # nothing to fetch: no external scripts, styles, images or fonts
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids))


def test_single_run_page_has_no_comparison_switch(runs):
    html = render(Report("one", "sqlite:///x.db", 0, runs[:1]))
    assert 'type="checkbox"' not in html and 'class="differs"' not in html
