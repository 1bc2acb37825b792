"""Figures as PNG files: predictions, confusion matrix, mistakes, training history, reliability, saliency.
Matplotlib's object API only (no pyplot state), so it runs headless; every file is written atomically."""

import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .files import atomic_path
from .metrics import ReliabilityBins
from .pixels import SIDE, as_pixels

DPI = 100  # figure sizes below are in inches, so a 10-inch figure is 1,000 pixels wide
# Digits are drawn as dark ink on white paper, which reads better in a grid than MNIST's white on black.
DIGIT_COLORMAP = "gray_r"
WRONG_COLOR = "#c62828"


def _save(figure: Figure, path: str | os.PathLike) -> Path:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=DPI, format="png", facecolor="white")
    return Path(path)


def _digit_range(images: np.ndarray) -> tuple[float, float]:
    """Integer images (and floats that are clearly 0..255) span 0..255, other floats 0..1."""
    if np.issubdtype(images.dtype, np.integer) or (images.size and np.nanmax(images) > 1.0):
        return 0.0, 255.0
    return 0.0, 1.0


def _percent(probability) -> str:
    """Rounded down, so a 99.96% guess reads 99.9% rather than a certain-looking 100.0%."""
    return f"{math.floor(float(probability) * 1000) / 10:.1f}%"


def _name(class_names: Sequence[str] | None, index) -> str:
    return str(index) if class_names is None else str(class_names[int(index)])


def _image_grid(count: int, columns: int, panel_inches: tuple[float, float], header_inches: float = 0.5):
    columns = max(1, min(count, columns))
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(columns * panel_inches[0], rows * panel_inches[1] + header_inches), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for unused in axes[count:]:
        unused.set_axis_off()
    return figure, axes[:count]


def _frame(axes, color: str = "#bbbbbb", width: float = 1.0, visible: bool = True) -> None:
    """Ticks off but the frame kept: it boxes a wrong prediction in red, or sets white paper off the page."""
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_visible(visible)
        spine.set_color(color)
        spine.set_linewidth(width)


def _digit_panel(axes, image: np.ndarray, value_range, title: str, wrong: bool = False) -> None:
    axes.imshow(image, cmap=DIGIT_COLORMAP, vmin=value_range[0], vmax=value_range[1], interpolation="nearest")
    axes.set_title(title, fontsize=10, color=WRONG_COLOR if wrong else "black", fontweight="bold" if wrong else None)
    _frame(axes, WRONG_COLOR, width=3, visible=wrong)


def plot_predictions(images, actual, predicted, path, class_names: Sequence[str] | None = None) -> Path:
    """The tutorial's closing figure: each digit titled "Actual: X  Predicted: Y", wrong ones in red, five a row."""
    actual, predicted = np.asarray(actual), np.asarray(predicted)
    if len(actual) == 0 or len(actual) != len(predicted):
        raise ValueError(f"need as many predictions as labels (at least one), got {len(predicted)} and {len(actual)}")
    stack = as_pixels(images)[:, 0].cpu().numpy()  # (N, 28, 28), as imshow draws them
    if len(stack) != len(actual):
        raise ValueError(f"{len(stack)} images for {len(actual)} labels")
    value_range = _digit_range(stack)
    figure, axes = _image_grid(len(stack), columns=5, panel_inches=(2.4, 2.5))
    for panel, image, truth, guess in zip(axes, stack, actual, predicted, strict=True):
        title = f"Actual: {_name(class_names, truth)}  Predicted: {_name(class_names, guess)}"
        _digit_panel(panel, image, value_range, title, wrong=truth != guess)
    correct = int(np.sum(actual == predicted))
    figure.suptitle(f"{correct} of {len(actual)} predicted correctly", fontsize=13)
    return _save(figure, path)


def plot_confusion_matrix(confusion, class_names: Sequence[str] | None, path) -> Path:
    """Heat map of counts; colour is the share of the true class on a log scale, so that a handful of
    errors among a thousand examples is still visible beside the diagonal."""
    matrix = np.asarray(confusion)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"confusion must be a square (K, K) matrix, got shape {matrix.shape}")
    size = matrix.shape[0]
    names = [str(index) for index in range(size)] if class_names is None else [str(name) for name in class_names]
    if len(names) != size:
        raise ValueError(f"{len(names)} class names for a {size}×{size} confusion matrix")
    row_totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, row_totals, out=np.zeros(matrix.shape), where=row_totals > 0)
    # The floor is one example of the largest class, so every non-zero cell gets a colour.
    norm = LogNorm(vmin=min(1.0 / max(int(row_totals.max()), 1), 0.01), vmax=1.0)
    side = max(5.0, 0.6 * size + 2.5)
    figure = Figure(figsize=(side + 1.2, side), layout="constrained")
    axes = figure.subplots()
    # Blues without its near-white end, so a single error is visibly tinted and distinct from an empty cell.
    colormap = ListedColormap(colormaps["Blues"](np.linspace(0.18, 1.0, 256)))
    image = axes.imshow(np.ma.masked_equal(shares, 0), cmap=colormap, norm=norm)
    font_size = 10 if size <= 12 else 7 if size <= 25 else 0
    for (row, column), count in np.ndenumerate(matrix) if font_size else ():
        dark = count > 0 and norm(shares[row, column]) > 0.55
        axes.text(
            column,
            row,
            str(count),
            ha="center",
            va="center",
            fontsize=font_size,
            color="white" if dark else ("black" if count else "#bbbbbb"),
        )
    axes.set_xticks(range(size), names)
    axes.set_yticks(range(size), names)
    axes.tick_params(labelsize=11)
    axes.set_xlabel("Predicted", fontsize=12)
    axes.set_ylabel("Actual", fontsize=12)
    total = int(matrix.sum())
    accuracy = np.trace(matrix) / total if total else 0.0
    axes.set_title(f"Confusion matrix: {accuracy:.2%} correct of {total:,}", fontsize=13)
    colorbar = figure.colorbar(image, ax=axes, shrink=0.8, label="share of the actual class (log scale)")
    colorbar.ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
    return _save(figure, path)


def plot_mistakes(images, actual, predicted, confidence, class_names: Sequence[str] | None, path) -> Path:
    """A grid of (typically the most confident) mistakes, each with its true and predicted label and the
    model's confidence in [0, 1]. No mistakes gives a figure that says so."""
    actual, predicted, confidence = np.asarray(actual), np.asarray(predicted), np.asarray(confidence, dtype=float)
    if not len(actual) == len(predicted) == len(confidence):
        raise ValueError("actual, predicted and confidence must be equally long")
    if len(actual) == 0:
        figure = Figure(figsize=(5, 2), layout="constrained")
        figure.text(0.5, 0.5, "No mistakes to show", ha="center", va="center", fontsize=14)
        return _save(figure, path)
    stack = as_pixels(images)[:, 0].cpu().numpy()  # (N, 28, 28), as imshow draws them
    if len(stack) != len(actual):
        raise ValueError(f"{len(stack)} images for {len(actual)} labels")
    value_range = _digit_range(stack)
    figure, axes = _image_grid(len(stack), columns=6, panel_inches=(2.2, 2.5))
    for panel, image, truth, guess, sure in zip(axes, stack, actual, predicted, confidence, strict=True):
        title = f"actual {_name(class_names, truth)}, predicted {_name(class_names, guess)}\n{_percent(sure)} sure"
        _digit_panel(panel, image, value_range, title, wrong=True)
    figure.suptitle("Most confident mistakes", fontsize=13)
    return _save(figure, path)


def _history_column(rows: list[dict], key: str) -> np.ndarray:
    """Missing, None and empty-string cells become NaN, which matplotlib leaves out of the line."""
    return np.array([np.nan if row.get(key) in (None, "") else float(row[key]) for row in rows])


def plot_history(history_rows: list[dict], path) -> Path:
    """Loss and accuracy per epoch, training against validation (when the run had a validation split)."""
    if not history_rows:
        raise ValueError("history_rows is empty: the run has not finished an epoch yet")
    epochs = _history_column(history_rows, "epoch")
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    for axes, metric in zip(figure.subplots(1, 2), ("loss", "accuracy"), strict=True):
        training, validation = _history_column(history_rows, metric), _history_column(history_rows, f"val_{metric}")
        axes.plot(epochs, training, marker="o", markersize=4, label="training")
        if np.isfinite(validation).any():
            axes.plot(epochs, validation, marker="o", markersize=4, label="validation")
        if metric == "accuracy" and np.nanmax(np.concatenate([training, validation, [0.0]])) <= 1.0:
            axes.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(np.unique(epochs)) == 1:  # a lone point would get a ±5% axis with fractional epochs
            axes.set_xlim(epochs[0] - 1, epochs[0] + 1)
        axes.set_title(metric.capitalize())
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
        axes.legend()
    return _save(figure, path)


def _reliability_panel(top, bottom, bins: ReliabilityBins, ece: float, title: str) -> None:
    filled = bins.count > 0
    centers, widths = (bins.edges[:-1] + bins.edges[1:]) / 2, np.diff(bins.edges)
    accuracy, confidence = np.where(filled, bins.accuracy, 0.0), np.where(filled, bins.confidence, 0.0)
    top.bar(centers, accuracy, width=widths, color="#1f77b4", edgecolor="white", label=f"accuracy (ECE {ece:.2%})")
    top.bar(
        centers[filled],
        np.abs(accuracy - confidence)[filled],
        bottom=np.minimum(accuracy, confidence)[filled],
        width=widths[filled],
        facecolor="none",
        edgecolor=WRONG_COLOR,
        hatch="///",
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfectly calibrated")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=title)
    top.legend(loc="upper left", fontsize=9)
    bottom.bar(centers[filled], bins.count[filled], width=widths[filled], color="gray", edgecolor="white")
    bottom.set(yscale="log", ylim=(0.5, None), xlim=(0, 1), ylabel="examples")
    bottom.set_xlabel("confidence (top-label probability)")


def plot_reliability(
    bins_before: ReliabilityBins,
    bins_after: ReliabilityBins,
    ece_before: float,
    ece_after: float,
    path,
    temperature: float | None = None,
) -> Path:
    """Reliability diagrams before and after temperature scaling, side by side, with bin counts beneath
    (a digit model puts most examples in the last bin, which the bars alone would hide)."""
    figure = Figure(figsize=(11, 5.5), layout="constrained")
    grid = figure.add_gridspec(2, 2, height_ratios=(3, 1))
    after_title = "After temperature scaling" + (f" (T = {temperature:.2f})" if temperature is not None else "")
    for column, (bins, ece, title) in enumerate(
        [(bins_before, ece_before, "Before temperature scaling"), (bins_after, ece_after, after_title)]
    ):
        top = figure.add_subplot(grid[0, column])
        _reliability_panel(top, figure.add_subplot(grid[1, column], sharex=top), bins, ece, title)
    return _save(figure, path)


def plot_saliency(image, saliency, path, title: str | None = None) -> Path:
    """The plain input beside the input overlaid with its attribution: red pixels pushed towards the
    class, blue ones away, transparent where the attribution is near zero."""
    image, saliency = np.asarray(image, dtype=float), np.asarray(saliency, dtype=float)
    if image.ndim != 2 or image.shape != saliency.shape:
        raise ValueError(f"image and saliency must be equal 2-D arrays, got {image.shape} and {saliency.shape}")
    value_range = _digit_range(image)
    figure = Figure(figsize=(8, 4.2), layout="constrained")
    plain, overlaid = figure.subplots(1, 2)
    plain.imshow(image, cmap=DIGIT_COLORMAP, vmin=value_range[0], vmax=value_range[1], interpolation="nearest")
    norm = _overlay_saliency(overlaid, image, saliency)
    plain.set_title("input")
    overlaid.set_title("attribution (red: for, blue: against)")
    for axes in (plain, overlaid):
        axes.set_axis_off()
    figure.colorbar(ScalarMappable(norm=norm, cmap="RdBu_r"), ax=overlaid, shrink=0.8)
    if title:
        figure.suptitle(title, fontsize=13)
    return _save(figure, path)


def _overlay_saliency(axes, image: np.ndarray, saliency: np.ndarray) -> Normalize:
    """The input under its attribution; returns the colour scale, symmetric about zero."""
    value_range = _digit_range(image)
    limit = float(np.max(np.abs(saliency))) or 1.0
    norm = Normalize(-limit, limit)
    # The ink is drawn at half strength under the overlay, so both the digit and the colours stay readable.
    axes.imshow(image, cmap=DIGIT_COLORMAP, vmin=value_range[0], vmax=2 * value_range[1], interpolation="nearest")
    strength = np.clip(np.abs(saliency) / limit, 0, 1) ** 0.5
    axes.imshow(saliency, cmap="RdBu_r", norm=norm, alpha=strength, interpolation="nearest")
    return norm


def _displayable(original) -> tuple[np.ndarray, str]:
    """A PIL image or array as something imshow can draw, shrunk so a phone photo stays cheap to plot,
    and its original size as "width×height"."""
    if hasattr(original, "convert"):  # a PIL image
        size = "{}×{}".format(*original.size)
        thumbnail = original.copy() if original.mode in ("L", "RGB", "RGBA") else original.convert("RGBA")
        thumbnail.thumbnail((512, 512))
        return np.asarray(thumbnail), size
    array = np.asarray(original)
    step = max(1, math.ceil(max(array.shape[:2]) / 512))
    return array[::step, ::step], f"{array.shape[1]}×{array.shape[0]}"


def plot_preprocessed(
    originals: Sequence,
    inputs: Sequence,
    labels: Sequence,
    confidences: Sequence,
    path,
    messages: Sequence[str | None] | None = None,
    names: Sequence[str] | None = None,
) -> Path:
    """For `predict --show`: each original image (PIL or array, any size) beside the 28×28 input the model
    saw and its prediction. A label of None (no digit found, unreadable file) shows messages[i] instead, and
    that entry's input or original may be None too. `names` (file names) replace the "original W×H" titles."""
    count = len(originals)
    messages = [None] * count if messages is None else list(messages)
    names = [None] * count if names is None else list(names)
    if count == 0 or not len(inputs) == len(labels) == len(confidences) == len(messages) == len(names) == count:
        raise ValueError("originals, inputs, labels, confidences, messages and names must be equally long, not empty")
    pairs_per_row = min(count, 3)
    rows = math.ceil(count / pairs_per_row)
    figure = Figure(figsize=(pairs_per_row * 5.0, rows * 2.9), layout="constrained")
    # A subfigure per image, so each original visibly belongs with its own input.
    subfigures = figure.subfigures(rows, pairs_per_row, squeeze=False, wspace=0.02, hspace=0.02).ravel()
    for index, subfigure in enumerate(subfigures[:count]):
        subfigure.set_edgecolor("#dddddd")
        subfigure.set_linewidth(1)
        left, right = subfigure.subplots(1, 2)
        _frame(left)
        _frame(right)
        name = names[index]
        if originals[index] is not None:
            original, size = _displayable(originals[index])
            value_range = _digit_range(original) if original.ndim == 2 else (None, None)
            left.imshow(original, cmap="gray", vmin=value_range[0], vmax=value_range[1])
            name = name or f"original {size}"
        left.set_title(textwrap.shorten(name or "original", 32), fontsize=10)
        if inputs[index] is not None:
            model_input = np.asarray(inputs[index]).reshape(SIDE, -1)  # a number: its digits side by side
            _digit_panel(right, model_input, _digit_range(model_input), "")
            _frame(right)
        if labels[index] is not None:
            sure = "" if confidences[index] is None else f" ({_percent(confidences[index])})"
            right.set_title(f"{labels[index]}{sure}", fontsize=13, fontweight="bold")
        elif inputs[index] is None:
            message = textwrap.fill(messages[index] or "no digit found", 22)
            right.text(0.5, 0.5, message, ha="center", va="center", color=WRONG_COLOR, transform=right.transAxes)
        else:
            right.set_title(textwrap.fill(messages[index] or "no digit found", 22), fontsize=10, color=WRONG_COLOR)
    return _save(figure, path)


# --- look inside (issue 19) ---
TILES_PER_ROW = 16  # a layer's tiles wrap after this many, as the page's rows do on a narrow screen


def _mosaic(tiles: np.ndarray, columns: int = TILES_PER_ROW) -> np.ndarray:
    """(count, height, width) uint8 tiles -> one float image with a 1-pixel NaN gap (drawn white) between them."""
    count, height, width = tiles.shape
    columns = min(count, columns)
    rows = math.ceil(count / columns)
    mosaic = np.full((rows * (height + 1) - 1, columns * (width + 1) - 1), np.nan)
    for index, tile in enumerate(tiles):
        top, left = (index // columns) * (height + 1), (index % columns) * (width + 1)
        mosaic[top : top + height, left : left + width] = tile
    return mosaic


def plot_inside(view, path, title: str | None = None) -> Path:
    """`digitcnn explain --layers`: the page's "look inside" view as one figure. `view` is an inside.InsideView:
    the input, its saliency and the class scores on top, then one row of tiles per layer, labelled as on the page."""
    mosaics = [_mosaic(layer.tiles) for layer in view.layers]
    # Each layer's row is as tall as its mosaic is relative to the figure's width; the top row gets a fixed share.
    heights = [2.2] + [max(0.6, 10 * mosaic.shape[0] / mosaic.shape[1]) + 0.35 for mosaic in mosaics]
    figure = Figure(figsize=(10, sum(heights) + 0.6), layout="constrained")
    top, *rows = figure.subfigures(len(heights), 1, height_ratios=heights)
    plain, overlaid, scores = top.subplots(1, 3, width_ratios=[1, 1, 2])
    plain.imshow(view.input, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    plain.set_title("input, 28×28", fontsize=10)
    _overlay_saliency(overlaid, view.input, view.saliency)
    overlaid.set_title(f"saliency for {view.class_names[view.target]}", fontsize=10)
    for axes in (plain, overlaid):
        _frame(axes)
    positions = np.arange(len(view.class_names))
    colors = ["#1a7f37" if index == view.target else "#3366cc" for index in positions]
    scores.barh(positions, view.probabilities, color=colors)
    scores.set_yticks(positions, view.class_names)
    scores.invert_yaxis()
    scores.set_xlim(0, 1)
    scores.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    scores.set_title("class scores", fontsize=10)
    colormap = colormaps["gray"].with_extremes(bad="white")
    for subfigure, layer, mosaic in zip(rows, view.layers, mosaics, strict=True):
        axes = subfigure.subplots()
        axes.imshow(mosaic, cmap=colormap, vmin=0, vmax=255, interpolation="nearest")
        axes.set_axis_off()
        channels, count = layer.shape[0], len(layer.channels)
        shown = f"all {channels} channels" if count == channels else f"the {count} most active of {channels} channels"
        axes.set_title(f"{layer.label}   ({' → '.join(layer.parts)}; {shown})", fontsize=10, loc="left")
    if title:
        figure.suptitle(title, fontsize=13)
    return _save(figure, path)


# --- end of look inside ---
