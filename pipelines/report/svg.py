"""Line charts as inline SVG text: several series overlaid on shared axes, one ``<polyline>`` per
series, with a legend, so a report page draws its curves without any script or download."""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

#: Colour-blind-friendly colours, cycled; past them series are told apart by their dash pattern too.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
DASHES = ("", "6 3", "2 3", "8 3 2 3")
#: Series with at most this many points also get a dot per point (epoch curves of a short run).
MARKER_LIMIT = 40
LEGEND_ROW = 16


@dataclass
class Series:
    """One curve: its legend ``label`` and its ``(x, y)`` points in x order."""
    label: str
    points: list[tuple[float, float]]


def finite_points(points) -> list[tuple[float, float]]:
    """The ``(x, y)`` pairs of ``points`` whose x and y are both finite numbers."""
    return [(float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y)]


def nice_step(span: float, target_ticks: int = 5) -> float:
    """A tick spacing of 1, 2 or 5 times a power of ten giving about ``target_ticks`` ticks over
    ``span`` (> 0)."""
    raw = span / max(1, target_ticks)
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def axis_range(values: list[float], target_ticks: int = 5) -> tuple[float, float, float]:
    """``(low, high, step)``: the range an axis shows for ``values`` (finite numbers), widened to
    whole tick steps so both ends carry a tick; a single value gets a unit-wide range around it."""
    lo, hi = min(values), max(values)
    if hi == lo:
        pad = abs(lo) * 0.05 or 0.5  # a flat curve: centred, not on the frame
        lo, hi = lo - pad, hi + pad
    step = nice_step(hi - lo, target_ticks)
    low, high = math.floor(lo / step) * step, math.ceil(hi / step) * step
    # floor/ceil of a quotient can land a rounding error off a whole step
    return round(low, 12), round(high, 12), step


def ticks(low: float, high: float, step: float) -> list[float]:
    """The tick values from ``low`` to ``high`` (inclusive) every ``step``."""
    count = int(round((high - low) / step))
    return [round(low + i * step, 12) for i in range(count + 1)]


def tick_label(value: float, step: float) -> str:
    """``value`` printed with as many decimals as ``step`` needs (scientific when very large or
    small)."""
    if value == 0:
        return "0"
    if abs(value) >= 1e6 or step < 1e-4:
        return f"{value:.3g}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{value:.{decimals}f}"


def series_style(index: int) -> tuple[str, str]:
    """``(colour, dash pattern)`` of the series at ``index`` (the same index, the same look in every
    chart of a page)."""
    return PALETTE[index % len(PALETTE)], DASHES[(index // len(PALETTE)) % len(DASHES)]


def line_chart(series: list[Series], title: str, x_label: str = "step", width: int = 560, height: int = 260,
               styles: list[int] | None = None) -> str:
    """An ``<svg>`` element (text) plotting ``series`` on shared axes: NaN and infinite points are
    left out, each series is one ``<polyline>`` (``data-series`` = its label) and a legend row.
    ``styles``: the palette index of each series (default: its position). Series without a finite
    point are listed in the legend as "no data"."""
    styles = list(range(len(series))) if styles is None else styles
    cleaned = [finite_points(s.points) for s in series]
    xs = [x for pts in cleaned for x, _ in pts]
    ys = [y for pts in cleaned for _, y in pts]
    left, right, top, bottom = 62, 14, 26, 40
    legend_h = LEGEND_ROW * len(series) + 6
    total_h = height + legend_h
    plot_w, plot_h = width - left - right, height - top - bottom
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{total_h}" '
           f'viewBox="0 0 {width} {total_h}" role="img" aria-label="{escape(title)}">',
           f'<text x="{left}" y="16" class="chart-title">{escape(title)}</text>']
    if xs:
        x_lo, x_hi, x_step = axis_range(xs)
        y_lo, y_hi, y_step = axis_range(ys)

        def px(x: float) -> float:
            return left + (x - x_lo) / (x_hi - x_lo) * plot_w

        def py(y: float) -> float:
            return top + plot_h - (y - y_lo) / (y_hi - y_lo) * plot_h

        out.append(f'<g class="axes" data-x-range="{x_lo:g} {x_hi:g}" data-y-range="{y_lo:g} {y_hi:g}">')
        for y in ticks(y_lo, y_hi, y_step):
            out.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{py(y):.1f}" y2="{py(y):.1f}"/>'
                       f'<text class="tick" x="{left - 4}" y="{py(y) + 4:.1f}" text-anchor="end">'
                       f'{tick_label(y, y_step)}</text>')
        for x in ticks(x_lo, x_hi, x_step):
            out.append(f'<line class="grid" x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{top}" y2="{top + plot_h}"/>'
                       f'<text class="tick" x="{px(x):.1f}" y="{top + plot_h + 14}" text-anchor="middle">'
                       f'{tick_label(x, x_step)}</text>')
        out.append(f'<rect class="frame" x="{left}" y="{top}" width="{plot_w}" height="{plot_h}"/>')
        out.append(f'<text class="axis-label" x="{left + plot_w / 2:.0f}" y="{top + plot_h + 32}" '
                   f'text-anchor="middle">{escape(x_label)}</text></g>')
        for s, pts, index in zip(series, cleaned, styles):
            if not pts:
                continue
            colour, dash = series_style(index)
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
            out.append(f'<polyline class="series" data-series="{escape(s.label)}" points="{coords}" fill="none" '
                       f'stroke="{colour}" stroke-width="1.6"{dash_attr}><title>{escape(s.label)}</title></polyline>')
            if len(pts) <= MARKER_LIMIT:
                out.extend(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.2" fill="{colour}"/>' for x, y in pts)
    else:
        out.append(f'<text class="empty" x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle">'
                   'no finite values</text>')
    for row, (s, pts, index) in enumerate(zip(series, cleaned, styles)):
        colour, dash = series_style(index)
        y = height + row * LEGEND_ROW + 8
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        note = "" if pts else " (no data)"
        out.append(f'<g class="legend-item"><line x1="{left}" x2="{left + 22}" y1="{y}" y2="{y}" stroke="{colour}" '
                   f'stroke-width="2.5"{dash_attr}/><text x="{left + 28}" y="{y + 4}">{escape(s.label + note)}</text></g>')
    out.append("</svg>")
    return "\n".join(out)
