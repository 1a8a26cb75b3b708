"""The report's figures: each function builds one matplotlib Figure from tidy data.

Figures are created with `matplotlib.figure.Figure` and rendered by the Agg
canvas in `png_bytes`, so no pyplot state or GUI backend is involved. Sizes and
dpi are fixed and `png_bytes` drops the "Software" PNG text chunk, so the same
data gives byte-identical PNG files. Build figures inside `style()`, which
applies the seaborn theme and restores matplotlib's settings afterwards.
"""

from __future__ import annotations

import contextlib
import io
import math

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from study.report_text import MINUS, Language

DPI = 110
TRAIN_COLOUR = "#1f77b4"
VALIDATION_COLOUR = "#ff7f0e"
RIGHT_COLOUR = "#1a7f37"
WRONG_COLOUR = "#cf222e"
# DejaVu Sans, matplotlib's bundled font, has both glyphs.
RIGHT_MARK = "\u2713"
WRONG_MARK = "\u2717"
EXAMPLE_COLUMNS = 8
# Hyperparameters drawn on a log axis when all their values are positive.
LOG_SCALE_HYPERPARAMETERS = ("learning_rate_head", "learning_rate_finetune", "l2")


@contextlib.contextmanager
def style():
    """Apply the seaborn theme for the figures built inside, then restore rcParams."""
    with matplotlib.rc_context():
        sns.set_theme(style="whitegrid", context="notebook", font="DejaVu Sans")
        yield


def png_bytes(figure: Figure) -> bytes:
    """Render `figure` with the Agg backend as PNG bytes without a timestamp or version."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _localise_linear_axis(axis, text: Language) -> None:
    axis.set_major_formatter(FuncFormatter(lambda value, _: text.tick(value)))


def _log_size_axis(ax, sizes, text: Language) -> None:
    """Draw x as a log axis of image counts, ticked at 1, 2 and 5 times powers of 10."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: text.integer(value)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    low, high = min(sizes), max(sizes)
    ax.set_xlim(low / 1.5, high * 1.5)


def learning_curves(
    epochs: pd.DataFrame, text: Language, title: str, validation_label: str
) -> Figure:
    """Plot accuracy and loss per global epoch of one trial, both phases on one axis.

    Args:
        epochs: the trial's rows of the epochs table.
        text: report language.
        title: figure title.
        validation_label: legend entry of the validation curves.
    """
    epochs = epochs.sort_values("global_epoch")
    figure = _new_figure(10, 4)
    axes = figure.subplots(1, 2)
    x = epochs["global_epoch"].to_numpy()
    head = epochs[epochs["phase"] == 1]["global_epoch"]
    finetune = epochs[epochs["phase"] == 2]["global_epoch"]
    boundary = head.max() + 0.5 if len(head) and len(finetune) else None

    for ax, metric, label in (
        (axes[0], "accuracy", text("axis_accuracy")),
        (axes[1], "loss", text("axis_loss")),
    ):
        ax.plot(
            x, epochs[metric].astype(float), color=TRAIN_COLOUR, marker="o",
            markersize=3, label=text("legend_train"),
        )
        ax.plot(
            x, epochs[f"val_{metric}"].astype(float), color=VALIDATION_COLOUR,
            linestyle="--", marker="o", markersize=3, label=validation_label,
        )
        if boundary is not None:
            ax.axvline(boundary, color="0.35", linestyle=":", linewidth=1.5)
            # The phase names sit just above the plot area on each side of the
            # boundary, so they never cover a curve.
            ax.text(
                boundary - 0.2, 1.01, text("phase_head") + " ", ha="right", va="bottom",
                fontsize=9, color="0.3", transform=ax.get_xaxis_transform(),
            )
            ax.text(
                boundary + 0.2, 1.01, " " + text("phase_finetune"), ha="left",
                va="bottom", fontsize=9, color="0.3", transform=ax.get_xaxis_transform(),
            )
        ax.set_xlabel(text("axis_epoch"))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _localise_linear_axis(ax.xaxis, text)
        if metric == "loss" and _spans_decades(epochs[["loss", "val_loss"]]):
            # One diverging epoch would otherwise flatten every other loss to a line.
            ax.set_yscale("log")
            label = text("axis_loss_log")
        else:
            _localise_linear_axis(ax.yaxis, text)
        ax.set_ylabel(label)
    axes[0].legend(loc="best", fontsize=9)
    figure.suptitle(title)
    return figure


def _spans_decades(values: pd.DataFrame, ratio: float = 20.0) -> bool:
    """Return whether all values are positive and the largest exceeds `ratio` times the least."""
    finite = values.to_numpy(dtype=float).ravel()
    finite = finite[np.isfinite(finite)]
    if not len(finite) or finite.min() <= 0:
        return False
    return finite.max() / finite.min() > ratio


def _lines_per_space(ax, best: pd.DataFrame, column: str) -> None:
    palette = sns.color_palette("colorblind", best["search_space"].nunique())
    for colour, (space, rows) in zip(palette, best.groupby("search_space", sort=True)):
        rows = rows.sort_values("train_size")
        ax.plot(
            rows["train_size"], rows[column], marker="o", color=colour, label=space,
        )


def overfitting(best: pd.DataFrame, text: Language) -> Figure:
    """Plot the train-test gap (pp) and the test accuracy against training images.

    Args:
        best: best trial per search space and size, with the columns
            search_space, train_size, gap_pp and finetune_test_accuracy.
        text: report language.
    """
    figure = _new_figure(10, 4)
    gap_ax, accuracy_ax = figure.subplots(1, 2)
    _lines_per_space(gap_ax, best, "gap_pp")
    gap_ax.axhline(0, color="0.5", linewidth=1)
    gap_ax.set_title(text("title_gap"))
    gap_ax.set_ylabel(text("axis_gap"))
    _lines_per_space(accuracy_ax, best, "finetune_test_accuracy")
    accuracy_ax.set_title(text("title_test_accuracy"))
    accuracy_ax.set_ylabel(text("axis_test_accuracy"))
    for ax in (gap_ax, accuracy_ax):
        _log_size_axis(ax, best["train_size"], text)
        ax.set_xlabel(text("axis_train_images"))
        _localise_linear_axis(ax.yaxis, text)
    accuracy_ax.legend(title=text("col_space"), loc="best", fontsize=9)
    return figure


def validation_loss(best: pd.DataFrame, text: Language) -> Figure:
    """Plot the best phase-2 validation loss against training images, one line per space."""
    figure = _new_figure(6, 4)
    ax = figure.subplots()
    _lines_per_space(ax, best, "finetune_best_val_loss")
    _log_size_axis(ax, best["train_size"], text)
    _localise_linear_axis(ax.yaxis, text)
    ax.set_title(text("title_val_loss"))
    ax.set_xlabel(text("axis_train_images"))
    ax.set_ylabel(text("axis_best_val_loss"))
    ax.legend(title=text("col_space"), loc="best", fontsize=9)
    return figure


def example_grid(
    examples: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    class_names,
    text: Language,
) -> Figure:
    """Show test images with their predicted and true class, right in green, wrong in red.

    Args:
        examples: uint8 images, shape (k, 32, 32, 3).
        labels: true class of each image, shape (k,).
        predicted: predicted class of each image, shape (k,).
        class_names: name of each class index.
        text: report language.
    """
    count = len(examples)
    rows = max(1, math.ceil(count / EXAMPLE_COLUMNS))
    figure = _new_figure(EXAMPLE_COLUMNS * 1.35, rows * 1.7)
    axes = np.atleast_1d(figure.subplots(rows, EXAMPLE_COLUMNS)).reshape(-1)
    for i, ax in enumerate(axes):
        if i >= count:
            ax.axis("off")
            continue
        right = int(predicted[i]) == int(labels[i])
        colour = RIGHT_COLOUR if right else WRONG_COLOUR
        mark = RIGHT_MARK if right else WRONG_MARK
        ax.imshow(examples[i], interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_edgecolor(colour)
            spine.set_linewidth(2.5)
        title = (
            f"{mark} {class_names[int(predicted[i])]}\n"
            + text("example_true", name=class_names[int(labels[i])])
        )
        ax.set_title(title, color=colour, fontsize=8, linespacing=1.2)
    return figure


def confusion_matrix(
    labels: np.ndarray, predicted: np.ndarray, class_names, text: Language
) -> Figure:
    """Plot the confusion matrix, each row normalised to the images of its true class.

    A class without test images gets an empty row instead of a division by zero.
    """
    classes = len(class_names)
    counts = np.zeros((classes, classes))
    np.add.at(counts, (labels.astype(int), predicted.astype(int)), 1)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)
    annotations = np.array([[text.number(v, 2) if v == v else "" for v in row] for row in shares])

    figure = _new_figure(8.5, 7)
    ax = figure.subplots()
    sns.heatmap(
        shares, ax=ax, annot=annotations, fmt="", cmap="Blues", vmin=0, vmax=1,
        square=True, xticklabels=class_names, yticklabels=class_names,
        annot_kws={"size": 8}, cbar_kws={"shrink": 0.8},
    )
    ax.set_xlabel(text("axis_predicted_class"))
    ax.set_ylabel(text("axis_true_class"))
    ax.tick_params(axis="x", labelrotation=45)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
        label.set_rotation_mode("anchor")
    ax.tick_params(axis="y", labelrotation=0)
    _localise_linear_axis(ax.collections[0].colorbar.ax.yaxis, text)
    return figure


def _scientific(value: float) -> str:
    """Format a tick of a log axis compactly, as "0", "2e-6" or "1e-4"."""
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}".replace("-", MINUS)


def _hyperparameter_axis(ax, values: pd.Series, name: str) -> tuple[np.ndarray, list | None]:
    """Return x positions for `values` and the category names when they are not numbers."""
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all() and not values.map(lambda v: isinstance(v, str)).any():
        positive = numeric[numeric > 0]
        if name in LOG_SCALE_HYPERPARAMETERS and len(positive):
            if len(positive) == len(numeric):
                ax.set_xscale("log")
                decades = math.log10(positive.max() / positive.min())
                # Over less than 2 decades, ticks at 1, 2 and 5 keep a few labels on
                # the axis. Over more decades they would crowd it.
                subs = (1.0,) if decades >= 2 else (1.0, 2.0, 5.0)
                ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
                ax.xaxis.set_minor_formatter(NullFormatter())
            else:
                # Zero has no place on a log axis, so it gets a linear stretch.
                ax.set_xscale("symlog", linthresh=float(positive.min()))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _scientific(value)))
        return numeric.to_numpy(dtype=float), None
    categories = sorted(values.astype(str).unique())
    positions = values.astype(str).map({c: i for i, c in enumerate(categories)})
    return positions.to_numpy(dtype=float), categories


def hyperparameter_panels(
    trials: pd.DataFrame, names: list[str], text: Language
) -> Figure:
    """Scatter the objective against each hyperparameter in `names`, one panel each.

    Args:
        trials: completed trials of one search space with the columns size,
            objective and hp_<name>.
        names: hyperparameters to plot, without the hp_ prefix.
        text: report language.
    """
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    figure = _new_figure(3.8 * columns + 1.4, 3.2 * rows)
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).reshape(-1)
    sizes = sorted(trials["size"].unique())
    palette = dict(zip(sizes, sns.color_palette("colorblind", len(sizes))))

    for i, ax in enumerate(axes):
        if i >= len(names):
            ax.axis("off")
            continue
        name = names[i]
        x, categories = _hyperparameter_axis(ax, trials[f"hp_{name}"], name)
        for size in sizes:
            chosen = (trials["size"] == size).to_numpy()
            ax.scatter(
                x[chosen], trials["objective"].to_numpy(dtype=float)[chosen],
                color=palette[size], s=36, edgecolor="white", linewidth=0.6,
            )
        if categories is not None:
            ax.set_xticks(range(len(categories)))
            rotation = 30 if max(len(c) for c in categories) > 8 else 0
            ax.set_xticklabels(categories, rotation=rotation)
            ax.set_xlim(-0.5, len(categories) - 0.5)
        elif ax.get_xscale() == "linear":
            _localise_linear_axis(ax.xaxis, text)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(text("axis_objective") if i % columns == 0 else "")
        _localise_linear_axis(ax.yaxis, text)

    handles = [
        Line2D([], [], marker="o", linestyle="", color=palette[size], markersize=7)
        for size in sizes
    ]
    figure.legend(
        handles, [text.integer(size) for size in sizes], title=text("legend_size"),
        loc="outside right upper",
    )
    return figure
