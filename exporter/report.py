"""Evaluation of a classifier on a labelled split: metrics, confusion matrix and plots.

The metrics are plain numpy over the model's probabilities; the plots use matplotlib's Agg backend
(no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def top_k_accuracy(probabilities: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Share of rows whose true class is among the ``k`` highest scores."""
    if len(truth) == 0:
        return 0.0
    k = min(k, probabilities.shape[1])
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == truth[:, None], axis=1)))


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts: row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def evaluate(
    probabilities: np.ndarray,
    truth: np.ndarray,
    labels: Sequence[str],
    paths: Sequence[str] = (),
    max_mistakes: int = 50,
) -> dict[str, Any]:
    """Top-1, top-5, per-class precision/recall/F1/support, the confusion matrix and the first
    misclassified images of a split."""
    num_classes = len(labels)
    predicted = np.argmax(probabilities, axis=1)
    matrix = confusion_matrix(truth, predicted, num_classes)
    true_positive = np.diag(matrix).astype(float)
    predicted_count = matrix.sum(axis=0).astype(float)
    support = matrix.sum(axis=1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted_count > 0, true_positive / predicted_count, 0.0)
        recall = np.where(support > 0, true_positive / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    per_class = {
        label: {
            "precision": round(float(precision[i]), 6),
            "recall": round(float(recall[i]), 6),
            "f1": round(float(f1[i]), 6),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    mistakes = [
        {
            "path": paths[i] if i < len(paths) else str(i),
            "label": labels[int(truth[i])],
            "predicted": labels[int(predicted[i])],
            "score": round(float(probabilities[i, predicted[i]]), 6),
        }
        for i in np.flatnonzero(predicted != truth)[:max_mistakes]
    ]
    present = support > 0
    k = min(5, num_classes)
    return {
        "images": int(len(truth)),
        "top1": round(top_k_accuracy(probabilities, truth, 1), 6),
        "top5": round(top_k_accuracy(probabilities, truth, k), 6),
        "top5_k": k,
        "macro_recall": round(float(recall[present].mean()) if present.any() else 0.0, 6),
        "macro_f1": round(float(f1[present].mean()) if present.any() else 0.0, 6),
        "per_class": per_class,
        "labels": list(labels),
        "confusion_matrix": matrix.tolist(),
        "mistakes": mistakes,
    }


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(
    matrix: np.ndarray | list[list[int]], labels: Sequence[str], path: Path, title: str
) -> None:
    """Write the confusion matrix (rows normalized to recall, counts in the cells) as a PNG."""
    plt = _pyplot()
    counts = np.asarray(matrix)
    n = len(labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))
    side = min(24.0, max(5.0, 0.32 * n + 2.5))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    font = max(4.0, min(9.0, 160.0 / max(n, 1)))
    ax.set_xticks(range(n), labels, rotation=90, fontsize=font)
    ax.set_yticks(range(n), labels, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 30:
        for row in range(n):
            for col in range(n):
                if counts[row, col]:
                    ax.text(
                        col,
                        row,
                        str(counts[row, col]),
                        ha="center",
                        va="center",
                        fontsize=font,
                        color="white" if rates[row, col] > 0.5 else "black",
                    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_training_curves(phases: Sequence[tuple[str, dict[str, list[float]]]], path: Path) -> None:
    """Write loss and accuracy per epoch (training and validation) of each phase as a PNG."""
    plt = _pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    offset = 0
    for index, (name, history) in enumerate(phases):
        epochs = len(history.get("loss", []))
        if not epochs:
            continue
        x = np.arange(offset + 1, offset + epochs + 1)
        color = f"C{index}"
        for ax, metric in ((loss_ax, "loss"), (acc_ax, "accuracy")):
            if metric in history:
                ax.plot(x, history[metric], color=color, linestyle="--", label=f"{name} train")
            if f"val_{metric}" in history:
                ax.plot(x, history[f"val_{metric}"], color=color, label=f"{name} val")
        if offset:
            for ax in (loss_ax, acc_ax):
                ax.axvline(offset + 0.5, color="gray", linewidth=0.8)
        offset += epochs
    for ax, title in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    acc_ax.set_ylim(0.0, 1.0)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
