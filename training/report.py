"""Classification reports from a confusion matrix: accuracy, per-class CSV/JSON and a confusion PNG."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np


def accuracy(confusion: np.ndarray) -> float:
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else 0.0


def per_class(confusion: np.ndarray, labels: list[str]) -> list[dict]:
    """Rows of label, support (true items), correct and accuracy (recall) per class."""
    rows = []
    for index, label in enumerate(labels):
        support = int(confusion[index].sum())
        correct = int(confusion[index, index])
        rows.append({"label": label, "support": support, "correct": correct,
                     "accuracy": correct / support if support else None})  # fmt: skip
    return rows


def write_report(directory: Path, confusion: np.ndarray, labels: list[str], title: str) -> None:
    """``per_class.csv``, ``per_class.json`` (with the matrix) and ``confusion.png`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = per_class(confusion, labels)
    with open(directory / "per_class.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    document = {
        "accuracy": accuracy(confusion),
        "per_class": rows,
        "labels": labels,
        "confusion": confusion.tolist(),
    }
    (directory / "per_class.json").write_text(json.dumps(document, indent=2) + "\n")
    plot_confusion(confusion, labels, title, directory / "confusion.png")


def plot_confusion(confusion: np.ndarray, labels: list[str], title: str, path: Path) -> None:
    """Row-normalised confusion matrix (true class per row) with counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros(confusion.shape, dtype=float), where=rows > 0)
    size = max(4.0, 0.45 * len(labels) + 2.0)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = np.arange(len(labels))
    axes.set_xticks(ticks, labels, rotation=90)
    axes.set_yticks(ticks, labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"{title}: accuracy {accuracy(confusion):.4f}")
    if len(labels) <= 40:
        for (row, col), count in np.ndenumerate(confusion):
            if count:
                axes.text(col, row, str(count), ha="center", va="center", fontsize=7,
                          color="white" if share[row, col] > 0.5 else "black")  # fmt: skip
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
