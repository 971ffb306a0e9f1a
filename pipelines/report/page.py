"""The report as one self-contained HTML page: inline CSS, inline SVG charts, images as data URIs,
and one small inline script (the "only differing params" switch), so it opens offline and can be
mailed or attached to a run as a single file."""
from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from html import escape

from pipelines.report import curves, summaries
from pipelines.report.collect import SAMPLES_KEY, RunData, SampleImage
from pipelines.report.svg import line_chart, series_style

#: Sample grids are scaled up by a whole factor to about this width (small grids stay sharp).
IMAGE_TARGET_PX = 192


@dataclass
class Report:
    """What one page shows: its title, the tracking URI (already redacted), when it was made (ms
    since the epoch) and the runs in column order."""
    title: str
    tracking_uri: str
    created_ms: int
    runs: list[RunData]


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 78rem; padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ccc; }
h3 { font-size: 1rem; margin: 1rem 0 .4rem; }
.meta { color: #555; font-size: .9rem; } nav a { margin-right: 1rem; }
table { border-collapse: collapse; font-size: .88rem; margin: .4rem 0; }
th, td { border: 1px solid #ddd; padding: .2rem .5rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.differs td { background: #fff4cc; } td.time { white-space: nowrap; } .none { color: #999; }
.swatch { display: inline-block; width: .8rem; height: .8rem; margin-right: .35rem; vertical-align: -1px; }
.charts { display: flex; flex-wrap: wrap; gap: .6rem 1rem; }
svg.chart { background: #fff; border: 1px solid #eee; }
svg.chart .chart-title { font-size: 13px; font-weight: 600; } svg.chart text { font-size: 11px; fill: #333; }
svg.chart .grid { stroke: #eee; } svg.chart .frame { fill: none; stroke: #999; }
.strip { display: flex; flex-wrap: wrap; gap: .6rem; align-items: flex-end; }
figure { margin: 0; text-align: center; font-size: .8rem; color: #444; }
figure img { image-rendering: pixelated; border: 1px solid #ccc; display: block; }
.note { color: #a60; font-size: .85rem; } .split-test { font-weight: 600; }
"""

SCRIPT = """
document.getElementById("only-differing").addEventListener("change", function (event) {
  document.querySelectorAll("#config tr.same").forEach(function (row) {
    row.style.display = event.target.checked ? "none" : "";
  });
});
"""


def _time(ms: int | None, zone: bool = True) -> str:
    if not ms:
        return "-"
    text = dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return text + " UTC" if zone else text


def duration_text(start_ms: int | None, end_ms: int | None) -> str:
    """A run's duration as ``1h02m03s`` / ``2m03s`` / ``3.2s``; ``-`` when it has not ended."""
    if not start_ms or not end_ms:
        return "-"
    seconds = max(0.0, (end_ms - start_ms) / 1000)
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def number_text(value: float | None) -> str:
    """``value`` in at most 5 significant digits; ``-`` for None."""
    return "-" if value is None else f"{value:.5g}"


def _swatch(index: int) -> str:
    colour, _ = series_style(index)
    return f'<span class="swatch" style="background:{colour}"></span>'


def _runs_table(report: Report, labels: list[str]) -> str:
    rows = []
    for i, (run, label) in enumerate(zip(report.runs, labels)):
        target = run.target
        model = (f"{escape(target.model_name)} v{escape(str(target.model_version))}"
                 if target.model_name else '<span class="none">-</span>')
        rows.append(
            f'<tr class="run" data-run-id="{escape(run.run_id)}"><td>{_swatch(i)}{escape(label)}</td>'
            f"<td><code>{escape(run.run_id)}</code></td><td>{escape(target.uri)}</td><td>{model}</td>"
            f"<td>{escape(run.experiment)}</td><td>{escape(run.status)}</td>"
            f'<td class="time">{_time(run.start_ms, zone=False)}</td><td class="time">{_time(run.end_ms, zone=False)}'
            f"</td><td>{duration_text(run.start_ms, run.end_ms)}</td></tr>")
    return ("<table id=\"runs\"><tr><th>run</th><th>run id</th><th>asked for</th><th>model version</th>"
            "<th>experiment</th><th>status</th><th>start (UTC)</th><th>end (UTC)</th><th>duration</th></tr>"
            + "".join(rows) + "</table>")


def _head_row(labels: list[str], first: list[str]) -> str:
    cells = "".join(f"<th>{escape(h)}</th>" for h in first)
    return "<tr>" + cells + "".join(f"<th>{_swatch(i)}{escape(lab)}</th>" for i, lab in enumerate(labels)) + "</tr>"


def _final_table(runs: list[RunData], labels: list[str]) -> str:
    rows = summaries.final_metrics(runs)
    if not rows:
        return '<p class="none">No val_* or test_* metrics were logged.</p>'
    body = []
    for row in rows:
        cells = []
        for value in row.values:
            if value is None:
                cells.append('<td class="num none">-</td>')
            else:
                step, number = value
                cells.append(f'<td class="num" title="step {step}">{number_text(number)}</td>')
        body.append(f'<tr data-metric="{escape(row.name)}" data-split="{row.split}"><td>{escape(row.name)}</td>'
                    f'<td class="split-{row.split}">{row.split}</td>' + "".join(cells) + "</tr>")
    return ('<table id="final-metrics">' + _head_row(labels, ["metric", "split"]) + "".join(body) + "</table>"
            '<p class="meta">The last value each run logged (hover for its step). Validation numbers chose '
            "models and epochs; test numbers were measured once, after the last epoch.</p>")


def _charts(charts: list[curves.Chart]) -> str:
    if not charts:
        return '<p class="none">No metric was logged at two or more steps.</p>'
    return ('<div class="charts">' + "".join(
        f'<div class="chart-box" data-metric="{escape(c.title)}">'
        + line_chart(c.series, c.title, x_label=c.x_label, styles=c.styles) + "</div>" for c in charts) + "</div>")


def _throughput_table(runs: list[RunData], labels: list[str]) -> str:
    stats = [summaries.throughput(run) for run in runs]
    if not any(s.steps or s.peak_cuda_mib is not None for s in stats):
        return '<p class="none">No per-step (step/...) metrics were logged.</p>'
    rows = [("median images/s", [s.images_per_s for s in stats]),
            ("median step time (s)", [s.step_time_s for s in stats]),
            ("median data-wait fraction", [s.data_wait_fraction for s in stats]),
            ("peak CUDA memory (MiB, any rank)", [s.peak_cuda_mib for s in stats]),
            ("steps logged", [float(s.steps) for s in stats])]
    body = "".join(f"<tr><td>{name}</td>" + "".join(f'<td class="num">{number_text(v)}</td>' for v in values)
                   + "</tr>" for name, values in rows)
    return '<table id="throughput">' + _head_row(labels, [""]) + body + "</table>"


def image_scale(width: int, target: int = IMAGE_TARGET_PX) -> int:
    """The whole factor a ``width``-pixel image is shown enlarged by (1 for images near or above
    ``target``)."""
    return max(1, target // max(1, width))


def _figure(image: SampleImage) -> str:
    scale = image_scale(image.width)
    when = "epoch" if image.key == SAMPLES_KEY else "step"
    data = base64.b64encode(image.data).decode("ascii")
    return (f'<figure data-step="{image.step}"><img src="data:{image.mime};base64,{data}" '
            f'width="{image.width * scale}" height="{image.height * scale}" alt="{escape(image.key)} at {when} '
            f'{image.step}" title="{escape(image.path)}"><figcaption>{when} {image.step}</figcaption></figure>')


def _samples(runs: list[RunData], labels: list[str]) -> str:
    parts = []
    for i, (run, label) in enumerate(zip(runs, labels)):
        parts.append(f'<h3 data-run-id="{escape(run.run_id)}">{_swatch(i)}{escape(label)}</h3>')
        if not run.images:
            parts.append('<p class="none">No sample images.</p>')
        keys = sorted({img.key for img in run.images})
        for key in keys:
            shown = [img for img in run.images if img.key == key]
            total = run.image_counts.get(key, len(shown))
            caption = f"key <code>{escape(key)}</code>" + (f": {len(shown)} of {total}, spread evenly"
                                                          if total > len(shown) else "")
            parts.append(f'<p class="meta">{caption}</p><div class="strip" data-key="{escape(key)}">'
                         + "".join(_figure(img) for img in shown) + "</div>")
        parts.extend(f'<p class="note">{escape(note)}</p>' for note in run.notes)
    return "".join(parts)


def _config(runs: list[RunData], labels: list[str]) -> str:
    sections = summaries.config_sections(runs)
    if not sections:
        return '<p class="none">No params were logged.</p>'
    several = len(runs) > 1
    body = []
    for section, rows in sections:
        body.append(f'<tr class="section"><th colspan="{len(runs) + 1}">{escape(section)}</th></tr>')
        for row in rows:
            css = "differs" if several and row.differs else "same"
            cells = "".join('<td class="none">-</td>' if v is None else f"<td>{escape(v)}</td>" for v in row.values)
            body.append(f'<tr class="{css}" data-key="{escape(row.key)}"><td><code>{escape(row.key)}</code></td>'
                        + cells + "</tr>")
    switch = ('<p><label><input type="checkbox" id="only-differing"> only params that differ between runs'
              "</label> (highlighted)</p>" if several else '<input type="hidden" id="only-differing">')
    return switch + '<table id="config">' + _head_row(labels, ["param"]) + "".join(body) + "</table>"


def render(report: Report) -> str:
    """The HTML text of ``report``: header, runs, final metrics with their split, curves, throughput,
    sample grids over time and the config."""
    runs = report.runs
    labels = summaries.run_labels(runs)
    sections = [
        ("runs", "Runs", _runs_table(report, labels)),
        ("final", "Final metrics", _final_table(runs, labels)),
        ("curves", "Curves", _charts(curves.metric_charts(runs, labels))),
        ("throughput", "Throughput", _throughput_table(runs, labels)
         + _charts(curves.throughput_charts(runs, labels))),
        ("samples", "Samples over time", _samples(runs, labels)),
        ("config", "Config", _config(runs, labels)),
    ]
    nav = "".join(f'<a href="#sec-{anchor}">{title}</a>' for anchor, title, _ in sections)
    body = "".join(f'<section id="sec-{anchor}"><h2>{title}</h2>{html}</section>'
                   for anchor, title, html in sections)
    return ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{escape(report.title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{escape(report.title)}</h1>\n"
            f'<p class="meta">{len(runs)} run{"s" if len(runs) != 1 else ""} from '
            f"<code>{escape(report.tracking_uri)}</code>, made {_time(report.created_ms)} by igan report</p>\n"
            f"<nav>{nav}</nav>\n{body}\n<script>{SCRIPT}</script>\n</body>\n</html>\n")
