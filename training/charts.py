"""Server-side SVG line charts of a job's metric history: loss, reward, KL curves.

Drawn as plain SVG text (no JavaScript, no matplotlib in the web process), so the
round page can re-render them on every poll. Every label is escaped.
"""

from __future__ import annotations

import math
from html import escape

from django.utils.safestring import SafeString, mark_safe

COLOURS = ("#0b57d0", "#b3261e", "#146c2e", "#8a4b08", "#6a1b9a", "#00838f")

# Which metrics go on which chart: a metric joins the first group whose test it passes.
GROUPS = (
    ("Loss", lambda key: key.endswith("loss") and "value" not in key),
    (
        "Reward",
        lambda key: "reward" in key or key.endswith("margins") or key == "score",
    ),
    (
        "KL",
        lambda key: (
            key == "kl"
            or key.endswith("/kl")
            or key.endswith("_kl")
            or key.startswith("kl")
        ),
    ),
    ("Accuracy", lambda key: "accurac" in key),
)
SKIP = {"step", "total", "time", "epoch", "learning_rate", "grad_norm", "resumed_from"}
MAX_SERIES = 6


def chart_groups(
    history: list[dict],
) -> list[tuple[str, dict[str, list[tuple[float, float]]]]]:
    """Return (title, {metric: [(step, value), ...]}) for each group with data."""
    groups: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for point in history:
        step = point.get("step")
        if not isinstance(step, (int, float)):
            continue
        for key, value in point.items():
            if (
                key in SKIP
                or not isinstance(value, (int, float))
                or isinstance(value, bool)
            ):
                continue
            if not math.isfinite(value):
                continue
            for title, test in GROUPS:
                if test(key):
                    series = groups.setdefault(title, {})
                    if key in series or len(series) < MAX_SERIES:
                        series.setdefault(key, []).append((float(step), float(value)))
                    break
    return [(title, groups[title]) for title, _ in GROUPS if title in groups]


def _ticks(low: float, high: float) -> list[float]:
    """Return three round-ish tick values spanning [low, high]."""
    if high == low:
        return [low]
    return [low, (low + high) / 2, high]


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.1e}"
    return f"{value:.3g}"


def line_chart(
    title: str,
    series: dict[str, list[tuple[float, float]]],
    *,
    width: int = 360,
    height: int = 180,
) -> SafeString:
    """Return an SVG line chart of the series against the step, with axes and a legend."""
    left, right, top, bottom = 52, 10, 24, 28 + 14 * ((len(series) + 1) // 2)
    plot_w, plot_h = width - left - right, height - top - bottom
    points = [p for values in series.values() for p in values]
    if not points or plot_w <= 0 or plot_h <= 0:
        return mark_safe("")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if y0 == y1:
        y0, y1 = y0 - 1, y1 + 1
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)} by step" '
        f'class="chart">',
        f"<title>{escape(title)} by step</title>",
        f'<text x="{left}" y="15" font-size="13" font-weight="600">{escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>',
    ]
    for tick in _ticks(y0, y1):
        y = sy(tick)
        parts.append(
            f'<line x1="{left - 3}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
        )
        parts.append(
            f'<text x="{left - 5}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{_label(tick)}</text>'
        )
    for tick in _ticks(x0, x1):
        x = sx(tick)
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 12}" font-size="10" text-anchor="middle">'
            f"{_label(round(tick))}</text>"
        )
    for i, (name, values) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
        if len(values) == 1:
            x, y = values[0]
            parts.append(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>'
            )
        else:
            parts.append(
                f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
            )
        lx = left + (i % 2) * (plot_w // 2)
        ly = top + plot_h + 26 + 14 * (i // 2)
        parts.append(
            f'<rect x="{lx}" y="{ly - 8}" width="10" height="3" fill="{colour}"/>'
        )
        last = values[-1][1]
        parts.append(
            f'<text x="{lx + 14}" y="{ly}" font-size="10">{escape(name)} ({_label(last)})</text>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))


def job_charts(history: list[dict]) -> list[SafeString]:
    """Return the SVG charts of a job's history, one per metric group."""
    return [line_chart(title, series) for title, series in chart_groups(history)]
