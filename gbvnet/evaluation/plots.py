"""Plots logged with every evaluation: per-subject accuracy (model beside every baseline), summed confusion matrix,
learning curves (training loss and the model-selection metric, validation macro-F1); and the protocol gap's
per-subject accuracy under each protocol (:func:`gap_figure`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gbvnet.train.metrics import SELECTION_METRIC  # noqa: E402


def make_all(summary: dict, histories: dict[str, list[dict]], baselines: dict[str, dict] | None = None, *,
             folder: str | Path) -> list[Path]:
    """Write the PNGs into ``folder`` (the caller removes it once they are logged) and return their paths.

    ``summary`` and each of ``baselines`` (name -> summary on the same folds) are
    :func:`gbvnet.evaluation.aggregate.summarise` outputs; ``histories`` maps a fold to its per-epoch results.
    """
    return save_figures({"per_subject_accuracy.png": per_subject_figure(summary, baselines or {}),
                         "confusion_matrix.png": confusion_figure(summary),
                         "learning_curves.png": learning_curves(histories)}, folder)


def save_figures(figures: dict[str, plt.Figure], folder: str | Path) -> list[Path]:
    """Write each figure as its PNG file name into ``folder`` (and close it); return the paths."""
    out = Path(folder)
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
    return [out / name for name in figures]


def per_subject_figure(summary: dict, baselines: dict[str, dict]) -> plt.Figure:
    """Test accuracy per subject: one bar for the model and one for each baseline (same folds), chance line."""
    series = {"model": summary, **baselines}
    subjects = [r["subject"] for r in summary["per_subject"]]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(5, 0.25 * len(subjects) * len(series) + 2) + 1.5, 3))
    for k, (name, s) in enumerate(series.items()):
        scores = {r["subject"]: r["accuracy"] for r in s["per_subject"]}
        ax.bar(np.arange(len(subjects)) + (k - (len(series) - 1) / 2) * width,
               [scores.get(subject, np.nan) for subject in subjects], width, label=name)
    ax.axhline(0.5, color="grey", lw=1, ls="--")
    ax.set_xticks(np.arange(len(subjects)), [str(subject) for subject in subjects])
    ax.set(xlabel="test subject", ylabel="accuracy", ylim=(0, 1), title="Per-subject test accuracy")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars, never over them
    fig.tight_layout()
    return fig


def confusion_figure(summary: dict) -> plt.Figure:
    """The test confusion matrix summed over folds."""
    cm = np.asarray(summary["confusion"])
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["low", "high"], yticklabels=["low", "high"],
           xlabel="predicted", ylabel="true", title="Test confusion (all folds)")
    fig.tight_layout()
    return fig


def learning_curves(histories: dict[str, list[dict]]) -> plt.Figure:
    """Per fold: training loss, and validation macro-F1 (the metric that selects the tested epoch, marked)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3))
    for name, history in histories.items():
        epochs = [row["epoch"] for row in history]
        ax1.plot(epochs, [row["train_loss"] for row in history], label=name)
        line, = ax2.plot(epochs, [row[SELECTION_METRIC] for row in history], label=name)
        best = max(history, key=lambda row: row[SELECTION_METRIC])  # the first best epoch: the one tested
        ax2.plot(best["epoch"], best[SELECTION_METRIC], "o", color=line.get_color(), ms=4)
    ax1.set(xlabel="epoch", ylabel="train loss", title="Training loss")
    ax2.set(xlabel="epoch", ylabel="validation macro-F1", title="Validation macro-F1 (selects the epoch)",
            ylim=(0, 1))
    if len(histories) <= 12:
        ax2.legend(fontsize=6)
    fig.tight_layout()
    return fig


GAP_MARKERS = {"majority": "_", "stratified": "x", "bandpower_logreg": "^"}


def gap_figure(documents: dict[str, dict], title: str = "Test accuracy per subject and protocol",
               colours: tuple[str, ...] | list[str] = ("C3", "C0", "C2", "C1")) -> plt.Figure:
    """Per subject, the model's test accuracy under each protocol (``documents``: protocol -> its evaluation
    document, leakiest first; one filled marker colour per protocol) and each baseline on the same folds (small
    markers in the protocol's colour), with the chance line. The benchmark draws its models the same way
    (``documents``: model -> its evaluation document, ``title`` and one of ``colours`` each)."""
    subjects = sorted({r["subject"] for doc in documents.values() for r in doc["per_subject"]})
    x = np.arange(len(subjects))
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(subjects) + 3), 3.2))
    offsets = np.linspace(-0.25, 0.25, len(documents))
    for (protocol, doc), dx, colour in zip(documents.items(), offsets, colours, strict=False):
        label = protocol + (" (LEAKY)" if doc.get("leaky") else "")
        for name, summary in [("model", doc), *doc.get("baselines", {}).items()]:
            scores = {r["subject"]: r["accuracy"] for r in summary["per_subject"]}
            y = [scores.get(s, np.nan) for s in subjects]
            if name == "model":
                ax.plot(x + dx, y, "o", color=colour, ms=7, label=label)
            else:
                ax.plot(x + dx, y, GAP_MARKERS.get(name, "."), color=colour, ms=5, alpha=0.7, mfc="none")
    for name, marker in GAP_MARKERS.items():  # one legend entry per baseline, in the protocols' colours
        ax.plot([], [], marker, color="grey", mfc="none", label=f"{name} baseline")
    ax.axhline(0.5, color="grey", lw=1, ls="--")
    ax.set_xticks(x, [str(s) for s in subjects])
    ax.set(xlabel="test subject", ylabel="accuracy", ylim=(0, 1.02), title=title)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig
