"""Run pictures (matplotlib, Agg): learning curves per fold and the worst OOF predictions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from kit.workspace import atomic_path

TRUTH_COLOUR = "#1f77ff"  # blue
PRED_COLOUR = "#ff2020"  # red


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_curves(records: list[dict[str, Any]], path: Path, metric: str = "score") -> Path:
    """One panel per fold: training loss (left axis, log) and validation score (right axis)
    per epoch, one line pair per sub-model; the best epoch is marked."""
    n = max(1, len(records))
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, record in zip(axes.flat, records, strict=False):
        right = ax.twinx()
        for i, (name, sub) in enumerate(record["submodels"].items()):
            epochs = [h["epoch"] for h in sub["history"]]
            label = "" if name == "main" else f" ({name})"
            ax.plot(
                epochs,
                [h["train_loss"] for h in sub["history"]],
                color=f"C{2 * i}",
                label=f"train loss{label}",
            )
            right.plot(
                epochs,
                [h["val_score"] for h in sub["history"]],
                color=f"C{2 * i + 1}",
                label=f"val {metric}{label}",
            )
            right.axvline(sub["best_epoch"], color=f"C{2 * i + 1}", ls=":", lw=1)
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("train loss")
        right.set_ylabel(f"val {metric}")
        ax.set_title(f"fold {record['fold']}: OOF {metric} {record['score']:.3f}")
        lines = ax.get_legend_handles_labels()
        more = right.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper right")
    _save(fig, path)
    return path


def plot_worst(
    images: np.ndarray,
    truth: np.ndarray,
    pred: np.ndarray,
    errors: np.ndarray,
    path: Path,
    count: int = 16,
) -> Path:
    """A sheet of the `count` rows with the largest `errors` (NaN rows skipped): each face with
    the truth in blue and the prediction in red, titled with its row and error."""
    order = [
        int(i) for i in np.argsort(-np.nan_to_num(errors, nan=-np.inf)) if np.isfinite(errors[i])
    ]
    worst = order[:count]
    cols = max(1, min(4, len(worst)))
    rows = max(1, math.ceil(len(worst) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.75 * rows + 0.3), squeeze=False)
    size = images.shape[-1]
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, worst, strict=False):
        ax.imshow(images[row], cmap="gray", vmin=0, vmax=255)
        ax.scatter(truth[row, :, 0], truth[row, :, 1], s=9, c=TRUTH_COLOUR, label="truth")
        ax.scatter(pred[row, :, 0], pred[row, :, 1], s=9, c=PRED_COLOUR, marker="x", label="pred")
        ax.set_xlim(-0.5, size - 0.5)  # points outside the image are clipped, not zoomed out
        ax.set_ylim(size - 0.5, -0.5)
        ax.set_title(f"row {row}: {errors[row]:.2f} px", fontsize=8)
    if not worst:
        axes.flat[0].text(0.5, 0.5, "no OOF predictions", ha="center", va="center")
    else:
        axes.flat[0].legend(fontsize=6, loc="lower left")
    fig.suptitle("worst OOF predictions (blue: truth, red: prediction)", fontsize=9)
    top = 1 - 0.35 / fig.get_figheight()
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.01, top=top - 0.03, wspace=0.05, hspace=0.2)
    _save(fig, path)
    return path
