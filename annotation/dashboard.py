"""The admin dashboard's figures and the geometry of its server-drawn SVG bar charts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from annotation.agreement import (
    human_orders_by_task,
    human_strengths_by_task,
    strength_alpha,
    summarise,
)
from annotation.quality import annotator_stats, ranking_rows

LABEL_WIDTH = 140
CHART_WIDTH = 560
BAR_HEIGHT = 20
GAP = 6


@dataclass
class Bar:
    """One horizontal bar: its label, value text and coordinates in the SVG."""

    label: str
    text: str
    y: int
    width: float


@dataclass
class BarChart:
    """A horizontal bar chart, drawn by templates/annotation/_bar_chart.html."""

    title: str
    bars: list[Bar]
    height: int
    label_width: int = LABEL_WIDTH
    width: int = CHART_WIDTH


def bar_chart(
    title: str, items: list[tuple[str, float]], fmt: str = "{:g}"
) -> BarChart:
    """Return a chart with one bar per (label, value), scaled to the largest value."""
    top = max((v for _, v in items), default=0) or 1
    span = CHART_WIDTH - LABEL_WIDTH - 60
    bars = [
        Bar(
            label=label,
            text=fmt.format(value),
            y=i * (BAR_HEIGHT + GAP),
            width=span * value / top,
        )
        for i, (label, value) in enumerate(items)
    ]
    return BarChart(
        title=title, bars=bars, height=max(1, len(bars)) * (BAR_HEIGHT + GAP)
    )


def dashboard(project) -> dict:
    """Return the dashboard's tables and charts for a project, from one query of answers."""
    rows = ranking_rows(project)
    stats = annotator_stats(rows)
    per_day = Counter(
        r["created_at"].date().isoformat() for r in rows if not r["is_skip"]
    )
    agreement = summarise(
        human_orders_by_task(
            (
                r["task_id"],
                r["annotator_id"],
                r["order"],
                r["annotator__annotator_profile__is_simulated"],
            )
            for r in rows
            if not r["is_skip"]
        )
    )
    agreement["strength_alpha"] = strength_alpha(
        human_strengths_by_task(
            (
                r["task_id"],
                r["annotator_id"],
                r["order"],
                r["strength"],
                r["annotator__annotator_profile__is_simulated"],
            )
            for r in rows
            if not r["is_skip"]
        )
    )
    gold = [s for s in stats if s.gold_accuracy is not None]
    timed = [s for s in stats if s.median_seconds is not None]
    return {
        "stats": stats,
        "agreement": agreement,
        "answers": len(rows),
        "charts": [
            bar_chart("Rankings per day", sorted(per_day.items())),
            bar_chart(
                "Rankings per annotator", [(s.username, s.rankings) for s in stats]
            ),
            bar_chart(
                "Gold accuracy per annotator",
                [(s.username, s.gold_accuracy) for s in gold],
                "{:.0%}",
            ),
            bar_chart(
                "Median seconds per task",
                [(s.username, s.median_seconds) for s in timed],
                "{:.0f} s",
            ),
        ],
    }
