"""The report's charts, drawn by matplotlib's Agg renderer into PNG bytes or RGB arrays.

Figures are built with the object-oriented API (`Figure` + `FigureCanvasAgg`), never pyplot:
no global backend is chosen, no window can open, and nothing is shared between calls, so the
training loop and evaluate.py can draw from any thread. Classes are drawn in the label scheme's
own colours and labelled by `text.chart_label` (visible, capped, no math mode).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter

from segmentation.report.summary import PrecisionRecall
from segmentation.report.text import chart_label

DPI = 100
# A category's line in the PR chart; categories are not classes, so they take plain colours.
CURVE_COLORS = {"um": "#1f77b4", "umm": "#ff7f0e", "uu": "#2ca02c", "overall": "#222222"}


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def rgb_array(figure: Figure) -> np.ndarray:
    """(H, W, 3) uint8, for TensorBoard's add_image."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _rgb(colors: np.ndarray) -> np.ndarray:
    return np.asarray(colors, dtype=np.float64).reshape(-1, 3) / 255.0


def _score(value: float | None) -> float:
    return math.nan if value is None else float(value)


def class_scores_figure(
    names: Sequence[str],
    iou: Sequence[float | None],
    dice: Sequence[float | None],
    share: np.ndarray,
    colors: np.ndarray,
) -> Figure:
    """IoU (solid) and Dice (light) bars per class sorted by IoU, classes without a score last;
    beside them each class's share of the ground-truth pixels on a log scale, so that a weak
    class can be told apart from a rare one."""
    iou_values = np.array([_score(value) for value in iou])
    dice_values = np.array([_score(value) for value in dice])
    # Best on top: barh draws from the bottom, so sort ascending, missing scores lowest.
    order = sorted(range(len(names)), key=lambda i: (not math.isnan(iou_values[i]), iou_values[i]))
    rgb = _rgb(colors)[order]
    rows = np.arange(len(order))
    height = 1.0 + 0.32 * len(order)
    figure = Figure(figsize=(8.4, height), dpi=DPI, layout="constrained")
    scores, shares = figure.subplots(1, 2, sharey=True, width_ratios=[3, 2])
    scores.barh(rows + 0.2, np.nan_to_num(iou_values[order]), 0.4, color=rgb, label="IoU")
    scores.barh(
        rows - 0.2, np.nan_to_num(dice_values[order]), 0.4, color=rgb, alpha=0.45, label="Dice"
    )
    for row, value in zip(rows, iou_values[order]):
        text = "n/a" if math.isnan(value) else f"{value:.3f}"
        scores.text(np.nan_to_num(value) + 0.01, row + 0.2, text, va="center", fontsize=8)
    scores.set(xlim=(0, 1.12), xticks=np.linspace(0, 1, 6), yticks=rows)
    scores.set_xlabel("IoU (solid), Dice (light)")
    scores.set_yticklabels([chart_label(names[i]) for i in order])
    # Bars take their class's colour: the legend shows the two kinds in grey.
    kinds = [Patch(color="#666666", label="IoU"), Patch(color="#666666", alpha=0.45, label="Dice")]
    scores.legend(handles=kinds, loc="lower right", fontsize="small")
    shown = np.asarray(share, dtype=np.float64)[order]
    shares.barh(rows, np.where(shown > 0, shown, np.nan), 0.6, color=rgb)
    shares.set_xscale("log")
    shares.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short ranges
    positive = shown[shown > 0]
    low = 10 ** math.floor(math.log10(positive.min())) if positive.size else 1e-4
    shares.set(xlim=(low, 1.0), xlabel="share of ground-truth pixels (log)")
    for axes in (scores, shares):
        axes.grid(axis="x", alpha=0.3)
    return figure


def confusion_figure(normalized: np.ndarray, names: Sequence[str], colors: np.ndarray) -> Figure:
    """The row-normalized confusion matrix as a heatmap, rows ground truth, columns prediction,
    in the scheme's class order; a strip of class colours runs along both axes."""
    count = len(names)
    side = 2.5 + 0.42 * count
    figure = Figure(figsize=(side + 1.2, side), dpi=DPI, layout="constrained")
    grid = figure.add_gridspec(
        2, 3, width_ratios=[0.5, count, 0.5], height_ratios=[0.5, count], wspace=0.0, hspace=0.0
    )
    heat = figure.add_subplot(grid[1, 1])
    rows = figure.add_subplot(grid[1, 0], sharey=heat)
    columns = figure.add_subplot(grid[0, 1], sharex=heat)
    image = heat.imshow(
        normalized, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto"
    )
    swatches = np.asarray(colors, dtype=np.uint8).reshape(count, 1, 3)
    rows.imshow(swatches, interpolation="nearest", aspect="auto")
    columns.imshow(swatches.transpose(1, 0, 2), interpolation="nearest", aspect="auto")
    if count <= 24:  # the percentages stay legible up to the 20-class scheme
        for (truth, predicted), value in np.ndenumerate(normalized):
            if value >= 0.005:
                shade = "white" if value > 0.55 else "black"
                heat.text(predicted, truth, f"{value:.0%}", ha="center", va="center",
                          fontsize=7, color=shade)  # fmt: skip
    ticks = np.arange(count)
    rows.set(xticks=[], yticks=ticks, ylabel="ground truth")
    labels = [chart_label(name) for name in names]
    rows.set_yticklabels(labels)
    columns.set(yticks=[], xticks=ticks, title="prediction")
    columns.xaxis.tick_top()
    columns.set_xticklabels(labels, rotation=90)
    heat.tick_params(labelleft=False, labelbottom=False, left=False, bottom=False)
    figure.colorbar(image, cax=figure.add_subplot(grid[1, 2]), label="share of the row")
    return figure


def pr_curves_figure(curves: dict[str, PrecisionRecall]) -> Figure:
    """The precision-recall curve of each KITTI category, its MaxF point marked."""
    figure = Figure(figsize=(6.5, 5.5), dpi=DPI, layout="constrained")
    axes = figure.subplots()
    for name, curve in curves.items():
        color = CURVE_COLORS.get(name)
        width = 2.2 if name == "overall" else 1.4
        label = f"{name}: MaxF {curve.max_f:.3f} (marked)"
        axes.plot(curve.recall, curve.precision, color=color, lw=width, label=label)
        axes.plot(curve.recall[curve.best], curve.precision[curve.best], "o", color=color, ms=7)
    axes.set(xlim=(0, 1.01), ylim=(0, 1.01), xlabel="recall", ylabel="precision")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize="small")
    return figure


def compare_figure(
    names: Sequence[str], deltas: Sequence[float | None], colors: np.ndarray, other: str
) -> Figure:
    """Per-class IoU of this run minus that of `other`, in the scheme's class order."""
    values = np.array([_score(value) for value in deltas])
    rows = np.arange(len(names))[::-1]  # the first class on top
    figure = Figure(figsize=(8, 1.0 + 0.3 * len(names)), dpi=DPI, layout="constrained")
    axes = figure.subplots()
    axes.barh(rows, np.nan_to_num(values), 0.6, color=_rgb(colors), edgecolor="#555555", lw=0.5)
    for row, value in zip(rows, values):
        text = "n/a" if math.isnan(value) else f"{value:+.3f}"
        axes.text(np.nan_to_num(value), row, f" {text} ", va="center",
                  ha="left" if np.nan_to_num(value) >= 0 else "right", fontsize=8)  # fmt: skip
    axes.axvline(0.0, color="black", lw=0.8)
    limit = max(0.05, float(np.nanmax(np.abs(values), initial=0.0)) * 1.3)
    xlabel = f"IoU change against {chart_label(other, 80)}"
    axes.set(xlim=(-limit, limit), yticks=rows, xlabel=xlabel)
    axes.set_yticklabels([chart_label(name) for name in names])
    axes.grid(axis="x", alpha=0.3)
    return figure
