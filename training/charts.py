"""Charts and tables of training metrics: a job's curves on the round page, the loop's figures.

A job's metric history (loss, reward, KL) is drawn as plain SVG text (no
JavaScript, no matplotlib in the web process), so the round page can re-render
it on every poll; every label is escaped. The headless loop's figures per round
(training/loop.py `RoundFigures`) become a text table and a PNG of the curves
(matplotlib, imported only when a plot is saved).
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from django.utils.safestring import SafeString, mark_safe

if TYPE_CHECKING:
    from training.loop import RoundFigures

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


# The loop's per-round table: column name and format.
TABLE_COLUMNS = (
    ("round", "{:>5}"),
    ("seed", "{:>4}"),
    ("policy", "{:<28}"),
    ("pairs", "{:>6}"),
    ("rm_acc", "{:>6}"),
    ("win_prev", "{:>8}"),
    ("win_sft", "{:>7}"),
    ("win_sft_95%", "{:>14}"),
    ("acc", "{:>5}"),
    ("acc_sft", "{:>7}"),
    ("kl", "{:>7}"),
    ("dist2", "{:>6}"),
    ("dist2_sft", "{:>9}"),
    ("wall_s", "{:>7}"),
)


def table_header() -> str:
    """Return the header line of the per-round table."""
    return "  ".join(fmt.format(name) for name, fmt in TABLE_COLUMNS)


def table_row(f: RoundFigures) -> str:
    """Return one round's line of the table (one seed's, or the mean over seeds)."""

    def number(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    values = (
        f.round,
        f.seeds[0] if len(f.seeds) == 1 else "all",
        f.policy[:28],
        f.pairs,
        number(f.rm_accuracy),
        f"{f.win_rate_vs_previous:.3f}",
        f"{f.win_rate_vs_sft:.3f}",
        f"[{f.win_rate_ci[0]:.3f}, {f.win_rate_ci[1]:.3f}]" if f.win_rate_ci else "n/a",
        "n/a" if f.accuracy is None else f"{f.accuracy:.2f}",
        "n/a" if f.accuracy_sft is None else f"{f.accuracy_sft:.2f}",
        f"{f.kl:.3f}",
        f"{f.distinct_2:.3f}",
        f"{f.distinct_2_sft:.3f}",
        f"{f.wall_s:.1f}",
    )
    return "  ".join(
        fmt.format(v) for (_, fmt), v in zip(TABLE_COLUMNS, values, strict=False)
    )


def save_plot(figures: list[RoundFigures], path: Path, *, title: str = "") -> Path:
    """Save the loop's curves (win rates, KL, distinct-2 per round) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rounds = [f.round for f in figures]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(12, 3.6))
    left.plot(rounds, [f.win_rate_vs_sft for f in figures], "o-", label="vs SFT")
    if all(f.win_rate_ci for f in figures):
        left.fill_between(
            rounds,
            [f.win_rate_ci[0] for f in figures],
            [f.win_rate_ci[1] for f in figures],
            alpha=0.2,
            label="vs SFT, 95%",
        )
    if all(f.accuracy is not None for f in figures):
        left.plot(rounds, [f.accuracy for f in figures], "^:", label="accuracy")
    left.plot(
        rounds, [f.win_rate_vs_previous for f in figures], "s--", label="vs previous"
    )
    left.axhline(0.5, color="#888", linewidth=0.8)
    left.set_ylim(0, 1)
    left.set_title("Judge win rate (held-out prompts)")
    left.legend()
    middle.plot(rounds, [f.kl for f in figures], "o-", color="#b3261e")
    middle.set_title("KL(policy || SFT) per response")
    right.plot(rounds, [f.distinct_2 for f in figures], "o-", label="policy")
    right.axhline(figures[0].distinct_2_sft, color="#888", linestyle="--", label="SFT")
    right.axhline(
        figures[0].distinct_2_sft / 2, color="#ccc", linestyle=":", label="SFT / 2"
    )
    right.set_ylim(0, 1)
    right.set_title("distinct-2")
    right.legend()
    for axis in (left, middle, right):
        axis.set_xlabel("round")
        axis.set_xticks(rounds)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
