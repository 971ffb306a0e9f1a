"""The inline SVG line chart of ``igan report``: axis ranges on whole ticks, one polyline per
series, NaN and infinite points left out, legends, and labels escaped."""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import pytest

from pipelines.report.svg import Series, axis_range, line_chart, nice_step, tick_label, ticks

NS = {"svg": "http://www.w3.org/2000/svg"}


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML, or this raises


def _polylines(root: ET.Element) -> list[ET.Element]:
    return root.findall(".//svg:polyline", NS)


def _coords(polyline: ET.Element) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in polyline.get("points").split()]


@pytest.mark.parametrize("values, expected", [
    ([0.13, 0.62], (0.1, 0.7, 0.1)),
    ([1, 4], (1.0, 4.0, 1.0)),
    ([0, 1000], (0.0, 1000.0, 200.0)),
    ([-3, 7], (-4.0, 8.0, 2.0)),
    ([0.9, 0.9], (0.84, 0.96, 0.02)),  # one value: a small range around it
    ([0, 0], (-0.6, 0.6, 0.2)),
])
def test_axis_range_is_widened_to_whole_ticks(values, expected):
    low, high, step = axis_range(values)
    assert (low, high, step) == pytest.approx(expected)
    assert low <= min(values) and high >= max(values)
    marks = ticks(low, high, step)
    assert marks[0] == pytest.approx(low) and marks[-1] == pytest.approx(high)
    assert 3 <= len(marks) <= 12


def test_nice_step_is_one_two_or_five_times_a_power_of_ten():
    for span in (0.0037, 0.9, 7, 130, 52000):
        step = nice_step(span)
        mantissa = step / 10 ** math.floor(math.log10(step))
        assert round(mantissa, 9) in (1, 2, 5, 10) and span / step <= 5.0001


def test_tick_labels_use_the_decimals_the_step_needs():
    assert [tick_label(v, 0.1) for v in (0.1, 0.30000000000000004, 1.0)] == ["0.1", "0.3", "1.0"]
    assert tick_label(250.0, 50) == "250" and tick_label(0.0, 5) == "0"
    assert tick_label(2e7, 5e6) == "2e+07"


def test_one_polyline_per_series_with_the_axis_ranges_in_the_chart():
    chart = line_chart([Series("baseline", [(1, 0.4), (2, 0.25), (3, 0.13)]),
                        Series("ablation", [(1, 0.65), (2, 0.5), (4, 0.42)])], "val_ssl_error", x_label="epoch")
    root = _parse(chart)
    lines = _polylines(root)
    assert [p.get("data-series") for p in lines] == ["baseline", "ablation"]
    assert [len(_coords(p)) for p in lines] == [3, 3]
    axes = root.find(".//svg:g[@class='axes']", NS)
    assert axes.get("data-x-range") == "1 4" and axes.get("data-y-range") == "0 0.8"
    legend = [t.text for t in root.findall(".//svg:g[@class='legend-item']/svg:text", NS)]
    assert legend == ["baseline", "ablation"]
    assert "val_ssl_error" in chart and ">epoch<" in chart
    # every point lies inside the plot frame
    frame = root.find(".//svg:rect[@class='frame']", NS)
    x0, y0 = float(frame.get("x")), float(frame.get("y"))
    x1, y1 = x0 + float(frame.get("width")), y0 + float(frame.get("height"))
    for p in lines:
        assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in _coords(p))
    # larger values are drawn higher (SVG's y grows downwards)
    first = _coords(lines[0])
    assert first[0][1] < first[1][1] < first[2][1]


def test_nan_and_infinite_points_are_left_out():
    chart = line_chart([Series("a", [(1, 1.0), (2, math.nan), (3, 3.0), (4, math.inf), (math.nan, 2.0)])], "m")
    (line,) = _polylines(_parse(chart))
    assert len(_coords(line)) == 2
    assert "nan" not in line.get("points").lower() and "inf" not in line.get("points").lower()
    # the axes come from the finite points only
    assert _parse(chart).find(".//svg:g[@class='axes']", NS).get("data-x-range") == "1 3"


def test_series_without_finite_points_is_in_the_legend_only():
    chart = line_chart([Series("real", [(0, 1.0), (1, 2.0)]), Series("broken", [(0, math.nan)])], "m")
    root = _parse(chart)
    assert [p.get("data-series") for p in _polylines(root)] == ["real"]
    assert "broken (no data)" in chart


def test_a_chart_with_nothing_finite_says_so():
    chart = line_chart([Series("a", [(1, math.nan)])], "m")
    assert not _polylines(_parse(chart)) and "no finite values" in chart


def test_labels_are_escaped():
    chart = line_chart([Series('<b>"x" & y</b>', [(0, 0.0), (1, 1.0)])], "t<itle>")
    root = _parse(chart)
    assert _polylines(root)[0].get("data-series") == '<b>"x" & y</b>'
    assert "<b>" not in chart and "t&lt;itle&gt;" in chart


def test_short_series_get_markers_long_ones_do_not():
    short = line_chart([Series("a", [(i, float(i)) for i in range(10)])], "m")
    long = line_chart([Series("a", [(i, float(i)) for i in range(100)])], "m")
    assert len(re.findall("<circle", short)) == 10 and "<circle" not in long


def test_styles_keep_a_series_colour_across_charts():
    one = line_chart([Series("b", [(0, 0.0), (1, 1.0)])], "m", styles=[1])
    both = line_chart([Series("a", [(0, 0.0), (1, 1.0)]), Series("b", [(0, 0.0), (1, 1.0)])], "m")
    colour = _polylines(_parse(one))[0].get("stroke")
    assert _polylines(_parse(both))[1].get("stroke") == colour
