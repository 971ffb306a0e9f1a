"""``igan report`` end to end against a real MLflow server: two runs logged like training runs
(config, epoch and ``step/`` metrics, sample grids both the MLflow 3 way and the old way), one named
by its run URI and one by a registered model version; the HTML checked as text, then opened in
headless Chromium with every request that is not ``file:`` or ``data:`` refused, to see that the
curves and images render from the file alone. Skips the browser part where Playwright or a Chromium
(Debian's ``chromium``) is not installed. Saves a screenshot to ``tests/artifacts/report.png``."""
from __future__ import annotations

import json
import re

import pytest
from helpers import REPO
from helpers.browser import headless_chromium, needs_browser
from helpers.report_runs import EPOCHS, INDEXED_EPOCHS, log_report_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
ARTIFACTS = REPO / "tests" / "artifacts"
EXPERIMENT = "igan-test-report"
#: Not ``igan-...``: `igan models` and the registry tests on the shared server do not see it.
MODEL = "report-test-model"


@pytest.fixture(scope="module")
def report_file(mlflow_server, tmp_path_factory) -> dict:
    """The report of two runs written by the CLI: ``{"path", "json", "baseline", "ablation",
    "version"}`` (run ids and the model version naming the ablation run)."""
    from pipelines.tracking import make_client

    baseline = log_report_run(mlflow_server, EXPERIMENT, "baseline", quality=0.2)
    ablation = log_report_run(mlflow_server, EXPERIMENT, "ablation-lr", quality=0.7,
                              overrides=["optim.lr_g=0.0005"], nan_epoch=2)
    client = make_client(mlflow_server)
    if client.search_registered_models(f"name='{MODEL}'"):
        client.delete_registered_model(MODEL)
    client.create_registered_model(MODEL)
    version = client.create_model_version(MODEL, f"runs:/{ablation}/generator", run_id=ablation).version
    out = tmp_path_factory.mktemp("report") / "report.html"
    code, stdout, err = _igan("report", f"runs:/{baseline}", f"models:/{MODEL}/{version}",
                                          "--out", str(out), "--tracking-uri", mlflow_server, "--json")
    assert code == 0, err
    assert stdout.strip().splitlines()[-2] == str(out)
    return {"path": out, "json": json.loads(stdout.strip().splitlines()[-1]), "baseline": baseline,
            "ablation": ablation, "version": str(version)}


def _igan(*argv: str) -> tuple[int, str, str]:
    """``igan ARGV`` in-process: ``(exit status, stdout, stderr)`` (for a module-scoped fixture,
    which cannot use the function-scoped ``capsys`` of :func:`helpers.cli_run.run_cli`)."""
    import contextlib
    import io

    from pipelines import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _chart(html: str, metric: str) -> str:
    """The SVG text of the chart of ``metric``."""
    start = html.index(f'<div class="chart-box" data-metric="{metric}">')
    return html[start:html.index("</svg>", start)]


def test_report_html_holds_curves_images_and_final_metrics(report_file, mlflow_server):
    html = report_file["path"].read_text()
    info = report_file["json"]
    assert [r["run_id"] for r in info["runs"]] == [report_file["baseline"], report_file["ablation"]]
    assert info["runs"][1]["model_name"] == MODEL and info["runs"][1]["model_version"] == report_file["version"]
    assert info["bytes"] == report_file["path"].stat().st_size
    # header: both runs, their ids, the model version the URI resolved to, the tracking URI
    assert report_file["baseline"] in html and report_file["ablation"] in html
    assert f"{MODEL} v{report_file['version']}" in html and mlflow_server in html
    assert html.count("FINISHED") == 2
    # curves: SVG charts overlaying both runs, quality metrics first
    charts = re.findall(r'<div class="chart-box" data-metric="([^"]+)"', html)
    assert charts[:3] == ["val_ssl_error", "val_inception_score", "val_fid"]
    assert {"loss_d", "loss_g", "step/loss_d", "step/images_per_s", "step/step_time_s",
            "step/data_wait_fraction", "cuda_peak_mib_rank* (per rank)"} <= set(charts)
    ssl_chart = _chart(html, "val_ssl_error")
    assert 'data-series="baseline"' in ssl_chart and 'data-series="ablation-lr"' in ssl_chart
    ablation_fid = re.search(r'data-series="ablation-lr" points="([^"]+)"', _chart(html, "val_fid"))[1]
    assert len(ablation_fid.split()) == EPOCHS - 1  # the NaN epoch is left out
    # images: per run, the old-style grid of epoch 1 and the step-indexed ones, in step order, inline
    figures = re.findall(r'<figure data-step="(\d+)"><img src="data:image/png;base64,', html)
    assert figures == [str(e) for e in (1, *INDEXED_EPOCHS)] * 2
    # final metrics with their split; the test rows are there
    rows = dict(re.findall(r'<tr data-metric="([^"]+)" data-split="([^"]+)">', html))
    assert rows["val_ssl_error"] == "validation" and rows["test_ssl_error"] == "test"
    assert rows["test_inception_score"] == "test" and "val_fid" in rows
    # throughput summary, config compared: the changed learning rate is highlighted
    assert "median images/s" in html
    assert 'class="differs" data-key="optim.lr_g"' in html and 'class="same" data-key="data.dataset"' in html


@needs_browser
def test_report_renders_offline_in_chromium(report_file, capsys):
    refused: list[str] = []
    requested: list[str] = []

    def refuse_network(route):
        url = route.request.url
        if url.startswith(("file:", "data:")):
            route.continue_()
        else:
            refused.append(url)
            route.abort()

    with headless_chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.route("**/*", refuse_network)
        page = context.new_page()
        page.on("request", lambda request: requested.append(request.url))
        page.goto(report_file["path"].as_uri())
        page.wait_for_load_state("load")

        sizes = page.eval_on_selector_all("figure img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
        assert len(sizes) == 6 and all(w == 18 for w in sizes), sizes
        drawn = page.eval_on_selector_all(
            "svg.chart polyline", "lines => lines.map(l => [l.dataset.series, l.getBBox().width])")
        assert {name for name, _ in drawn} >= {"baseline", "ablation-lr"}
        assert all(width > 0 for _, width in drawn), drawn
        assert page.locator("svg.chart").count() >= 10
        assert page.locator('#final-metrics tr[data-split="test"]').count() >= 2

        # the switch hides the params that are the same in both runs
        lr, dataset = page.locator('#config tr[data-key="optim.lr_g"]'), page.locator('#config tr[data-key="data.dataset"]')
        assert lr.is_visible() and dataset.is_visible()
        page.check("#only-differing")
        assert lr.is_visible() and not dataset.is_visible()
        page.uncheck("#only-differing")

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        context.close()
    assert refused == []
    assert all(url.startswith(("file:", "data:")) for url in requested), requested
    with capsys.disabled():
        print(f"\nscreenshot of the report page: {shot}")
