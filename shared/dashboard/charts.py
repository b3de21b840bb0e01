"""Inline SVG charts: losses by step (or the final losses), traffic steps, and small bars. No script, no style.

Colours come from the page's stylesheet through class names, so the charts carry no `style` attribute
(the page's Content-Security-Policy allows none).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shared.dashboard.formatting import clock_time, escaped, full_time

# Drawn at about the size a panel of the page gives them, so that their text stays readable.
LOSS_WIDTH, LOSS_HEIGHT = 420, 220
# Points drawn per line at most: a long job logs a loss per step, far more than the chart has pixels.
MAX_POINTS = 400
FINAL_LOSSES = (
    ("train_loss_first", "train loss, first steps", "bar-train-first"),
    ("train_loss", "train loss, end", "bar-train"),
    ("eval_loss_before", "eval loss, before training", "bar-eval-first"),
    ("eval_loss", "eval loss, after training", "bar-eval"),
)
SERIES = (("train_loss", "train loss", "train"), ("eval_loss", "eval loss", "eval"))


@dataclass(frozen=True)
class TrafficStep:
    """One moment of a rollout: the new deployment's share of traffic, and the one it replaces (None: none)."""

    label: str
    at: str
    new_percent: int
    old_percent: int | None


def _number(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _tick(value: float) -> str:
    return f"{value:.3g}"


def _thinned(points: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    if len(points) <= MAX_POINTS:
        return list(points)
    every = -(-len(points) // MAX_POINTS)
    return [*points[::every], points[-1]] if (len(points) - 1) % every else list(points[::every])


def loss_history_chart(history: dict[str, list[tuple[int, float]]]) -> str:
    """Train and eval loss by step as lines, with axes and a legend."""
    series = [(label, kind, _thinned(history.get(key, []))) for key, label, kind in SERIES if history.get(key)]
    points = [point for _, _, line in series for point in line]
    left, right, top, bottom = 52, 16, 28, 36
    width, height = LOSS_WIDTH - left - right, LOSS_HEIGHT - top - bottom
    first_step, last_step = min(step for step, _ in points), max(step for step, _ in points)
    low, high = min(loss for _, loss in points), max(loss for _, loss in points)
    pad = (high - low) * 0.08 or abs(high) * 0.1 or 1.0
    low, high = low - pad, high + pad
    span = (last_step - first_step) or 1

    def x(step: float) -> float:
        return left + (step - first_step) / span * width

    def y(loss: float) -> float:
        return top + (high - loss) / (high - low) * height

    parts = [
        f'<svg class="chart loss-chart" data-kind="history" viewBox="0 0 {LOSS_WIDTH} {LOSS_HEIGHT}" '
        f'width="{LOSS_WIDTH}" height="{LOSS_HEIGHT}" role="img" aria-label="loss by training step">',
        "<title>Loss by training step</title>",
    ]
    for index in range(5):
        value = low + (high - low) * index / 4
        parts.append(
            f'<line class="grid" x1="{left}" x2="{left + width}" y1="{_number(y(value))}" y2="{_number(y(value))}"/>'
            f'<text class="tick" x="{left - 6}" y="{_number(y(value) + 4)}" text-anchor="end">{_tick(value)}</text>'
        )
    for step in sorted({first_step, (first_step + last_step) // 2, last_step}):
        parts.append(
            f'<text class="tick" x="{_number(x(step))}" y="{top + height + 16}" text-anchor="middle">{step}</text>'
        )
    parts.append(
        f'<text class="axis-label" x="{left + width / 2:.0f}" y="{LOSS_HEIGHT - 4}" text-anchor="middle">step</text>'
    )
    for index, (label, kind, line) in enumerate(series):
        coordinates = " ".join(f"{_number(x(step))},{_number(y(loss))}" for step, loss in line)
        parts.append(f'<polyline class="line line-{kind}" points="{coordinates}"/>')
        if len(line) <= 12:
            parts.extend(
                f'<circle class="dot dot-{kind}" cx="{_number(x(step))}" cy="{_number(y(loss))}" r="3.5">'
                f"<title>{escaped(label)} {loss:.4f} at step {step}</title></circle>"
                for step, loss in line
            )
        last_loss = line[-1][1]
        legend_x = left + 8 + index * 170
        parts.append(
            f'<rect class="swatch swatch-{kind}" x="{legend_x}" y="8" width="14" height="4"/>'
            f'<text class="legend" x="{legend_x + 20}" y="14">{escaped(label)} {last_loss:.3f}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def final_loss_chart(metrics: dict[str, float]) -> str:
    """The losses a job reported at its end (and before training, where known) as horizontal bars."""
    rows = [(label, float(metrics[key]), kind) for key, label, kind in FINAL_LOSSES if key in metrics]
    label_width, bar_width, row_height = 170, 190, 28
    height = row_height * len(rows) + 8
    top = max(value for _, value, _ in rows) or 1.0
    parts = [
        f'<svg class="chart loss-chart" data-kind="final" viewBox="0 0 {LOSS_WIDTH} {height}" width="{LOSS_WIDTH}" '
        f'height="{height}" role="img" aria-label="final losses">',
        "<title>Losses the job reported</title>",
    ]
    for index, (label, value, kind) in enumerate(rows):
        y = 4 + index * row_height
        length = max(1.0, value / top * bar_width)
        parts.append(
            f'<text class="bar-label" x="{label_width - 8}" y="{y + 17}" text-anchor="end">{escaped(label)}</text>'
            f'<rect class="bar {kind}" x="{label_width}" y="{y + 4}" width="{_number(length)}" height="18" rx="3"/>'
            f'<text class="bar-value" x="{_number(label_width + length + 6)}" y="{y + 17}">{value:.3f}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def traffic_chart(steps: Sequence[TrafficStep], new_name: str, old_name: str) -> str:
    """The new deployment's share of traffic at each step of its rollout, and the replaced one's."""
    width, height, left, right, top, bottom = LOSS_WIDTH, 150, 44, 24, 26, 44
    inner_width, inner_height = width - left - right, height - top - bottom
    gap = inner_width / max(1, len(steps) - 1)

    def x(index: int) -> float:
        return left + index * gap if len(steps) > 1 else left + inner_width / 2

    def y(percent: float) -> float:
        return top + (100 - percent) / 100 * inner_height

    def stepped(values: list[int]) -> str:
        corners = [(x(0), y(values[0]))]
        for index in range(1, len(values)):
            corners += [(x(index), y(values[index - 1])), (x(index), y(values[index]))]
        return " ".join(f"{_number(a)},{_number(b)}" for a, b in corners)

    parts = [
        f'<svg class="chart traffic-chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="traffic during the rollout">',
        "<title>Traffic during the rollout</title>",
    ]
    for percent in (0, 50, 100):
        parts.append(
            f'<line class="grid" x1="{left}" x2="{left + inner_width}" y1="{_number(y(percent))}" '
            f'y2="{_number(y(percent))}"/><text class="tick" x="{left - 6}" y="{_number(y(percent) + 4)}" '
            f'text-anchor="end">{percent} %</text>'
        )
    old = [step.old_percent for step in steps]
    if all(value is not None for value in old):
        parts.append(f'<polyline class="line line-old" points="{stepped([v or 0 for v in old])}"/>')
    parts.append(f'<polyline class="line line-new" points="{stepped([step.new_percent for step in steps])}"/>')
    for index, step in enumerate(steps):
        # The first and last labels lean inwards, so that they stay inside the chart.
        anchor = "start" if index == 0 and len(steps) > 1 else "end" if index == len(steps) - 1 > 0 else "middle"
        parts.append(
            f'<circle class="dot dot-new" cx="{_number(x(index))}" cy="{_number(y(step.new_percent))}" r="4">'
            f"<title>{escaped(step.label)} at {escaped(full_time(step.at))}: {escaped(new_name)} "
            f"{step.new_percent} %</title></circle>"
            f'<text class="tick" x="{_number(x(index))}" y="{top + inner_height + 16}" text-anchor="{anchor}">'
            f"{escaped(step.label)}</text>"
            f'<text class="tick faint" x="{_number(x(index))}" y="{top + inner_height + 30}" text-anchor="{anchor}">'
            f"{escaped(clock_time(step.at))}</text>"
        )
    legend = [("new", f"{new_name} (this run)")] + ([("old", f"{old_name} (replaced)")] if old_name else [])
    for index, (kind, label) in enumerate(legend):
        legend_x = left + index * 190
        parts.append(
            f'<rect class="swatch swatch-{kind}" x="{legend_x}" y="8" width="14" height="4"/>'
            f'<text class="legend" x="{legend_x + 20}" y="14">{escaped(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def meter(fraction: float, kind: str, width: int = 90, marker: float | None = None, label: str = "") -> str:
    """A small horizontal bar filled to `fraction` (0-1), with an optional marker (a threshold)."""
    filled = max(0.0, min(1.0, fraction)) * width
    mark = ""
    if marker is not None:
        at = max(0.0, min(1.0, marker)) * width
        mark = f'<line class="meter-mark" x1="{_number(at)}" x2="{_number(at)}" y1="0" y2="12"/>'
    title = f"<title>{escaped(label)}</title>" if label else ""
    return (
        f'<svg class="meter" viewBox="0 0 {width} 12" width="{width}" height="12" role="img" '
        f'aria-label="{escaped(label)}">{title}<rect class="meter-back" width="{width}" height="12" rx="3"/>'
        f'<rect class="meter-fill meter-{escaped(kind)}" width="{_number(filled)}" height="12" rx="3"/>{mark}</svg>'
    )
