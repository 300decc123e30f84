"""Plots logged with every evaluation: per-subject accuracy, summed confusion matrix, learning curves."""

from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def make_all(summary: dict, histories: dict[str, list[dict]]) -> list[Path]:
    """Write the PNGs into a temporary folder and return their paths."""
    out = Path(tempfile.mkdtemp(prefix="gbvnet-plots-"))
    paths = [out / "per_subject_accuracy.png", out / "confusion_matrix.png", out / "learning_curves.png"]

    fig, ax = plt.subplots(figsize=(max(4, 0.4 * len(summary["per_subject"])), 3))
    subjects = [str(r["subject"]) for r in summary["per_subject"]]
    ax.bar(subjects, [r["accuracy"] for r in summary["per_subject"]], color="tab:blue")
    ax.axhline(0.5, color="grey", lw=1, ls="--")
    ax.set(xlabel="test subject", ylabel="accuracy", ylim=(0, 1), title="Per-subject test accuracy")
    fig.tight_layout()
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)

    cm = np.asarray(summary["confusion"])
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["low", "high"], yticklabels=["low", "high"],
           xlabel="predicted", ylabel="true", title="Test confusion (all folds)")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3))
    for name, history in histories.items():
        epochs = [row["epoch"] for row in history]
        ax1.plot(epochs, [row["train_loss"] for row in history], label=name)
        ax2.plot(epochs, [row["val_f1"] for row in history], label=name)
    ax1.set(xlabel="epoch", ylabel="train loss", title="Training loss")
    ax2.set(xlabel="epoch", ylabel="validation F1", title="Validation F1", ylim=(0, 1))
    if len(histories) <= 12:
        ax2.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(paths[2], dpi=100)
    plt.close(fig)
    return paths
