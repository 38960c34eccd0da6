"""Evaluation plots a person can read, also for 77 classes (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LinearSegmentedColormap


def _tick_fontsize(n: int) -> float:
    return 10.0 if n <= 15 else 8.0 if n <= 40 else 6.5


def plot_confusion_matrix(report: dict[str, Any], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (each row: where that true class's tickets went).

    The diagonal (correct) and the errors get separate colour scales: with 77 classes the
    diagonal is near 1 and the errors are a few per cent, which a single scale would render
    invisible. Off-diagonal cells are annotated with their ticket counts.
    """
    labels: list[str] = report["labels"]
    cm = np.asarray(report["confusion_matrix"], dtype=float)
    n = len(labels)
    support = cm.sum(axis=1, keepdims=True)
    rates = np.divide(cm, support, out=np.zeros_like(cm), where=support > 0)
    diag = np.eye(n, dtype=bool)

    size = max(6.0, 0.27 * n + 3.0)
    fig, ax = plt.subplots(figsize=(size + 1.5, size), dpi=110)
    errors = np.ma.masked_where(diag | (cm == 0), rates)
    correct = np.ma.masked_where(~diag, rates)
    err_max = max(float(errors.max()) if errors.count() else 0.0, 0.05)
    red = LinearSegmentedColormap.from_list("errors", ["#fde0d2", "#b2182b"])
    im_ok = ax.imshow(correct, cmap="Greens", vmin=0.0, vmax=1.0, interpolation="nearest")
    im_err = ax.imshow(errors, cmap=red, vmin=0.0, vmax=err_max, interpolation="nearest")

    fs = _tick_fontsize(n)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=fs)
    ax.set_yticks(range(n), labels, fontsize=fs)
    ax.set_xlabel("predicted label", fontsize=fs + 3)
    ax.set_ylabel("true label", fontsize=fs + 3)
    ax.set_xticks(np.arange(-0.5, n, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
    ax.grid(which="minor", color="#eeeeee", linewidth=0.4)
    ax.tick_params(which="minor", length=0)
    annotate = max(5.5, fs - 1.0)
    for i, j in zip(*np.nonzero((cm > 0) & ~diag), strict=True):
        ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=annotate, color="black")

    accuracy = report.get("accuracy")
    macro = report.get("macro_f1")
    heading = title or "Confusion matrix"
    if accuracy is not None and macro is not None:
        heading += f"  (accuracy {accuracy:.3f}, macro-F1 {macro:.3f}, n={int(cm.sum())})"
    ax.set_title(
        heading + "\nrows normalised by true-class support; numbers = misrouted tickets", fontsize=12
    )
    cbar_ok = fig.colorbar(im_ok, ax=ax, fraction=0.025, pad=0.015)
    cbar_ok.set_label("diagonal: recall", fontsize=9)
    cbar_err = fig.colorbar(im_err, ax=ax, fraction=0.025, pad=0.07)
    cbar_err.set_label("off-diagonal: share of the true class", fontsize=9)
    cbar_err.ax.yaxis.set_label_position("left")  # its right side faces the other colour bar
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_per_class_f1(
    report: dict[str, Any],
    path: Path,
    title: str = "",
    compare: dict[str, Any] | None = None,
    names: tuple[str, str] = ("clean", "noisy"),
) -> Path:
    """Horizontal bars of per-class F1, worst class at the top, support in the label.

    With ``compare`` (a second report on the same labels, e.g. the noisy test set) each class
    gets a second, thinner bar.
    """
    per_class: dict[str, dict[str, float]] = report["per_class"]
    rows = [(label, m) for label, m in per_class.items() if m["support"] > 0]
    rows.sort(key=lambda r: r[1]["f1"], reverse=True)  # barh draws y=0 at the bottom
    n = len(rows)
    fig, ax = plt.subplots(figsize=(9.0, max(3.0, 0.2 * n + 1.6)), dpi=110)
    y = np.arange(n)
    f1 = np.array([m["f1"] for _, m in rows])
    colors = plt.cm.RdYlGn(np.clip((f1 - 0.5) / 0.5, 0.0, 1.0))
    height = 0.8 if compare is None else 0.45
    ax.barh(
        y,
        f1,
        height=height,
        color=colors,
        edgecolor="#555555",
        linewidth=0.3,
        label=f"{names[0]} (colour: F1)",
    )
    if compare is not None:
        other = np.array([compare["per_class"].get(label, {}).get("f1", 0.0) for label, _ in rows])
        ax.barh(y + 0.45, other, height=0.35, color="#7f9fc4", label=names[1])
    fs = _tick_fontsize(n)
    for row, value in enumerate(f1):  # values right of the bar ends, readable on any bar colour
        ax.text(value + 0.005, row, f"{value:.2f}", ha="left", va="center", fontsize=fs - 0.5)
    ax.set_yticks(y, [f"{label} ({int(m['support'])})" for label, m in rows], fontsize=fs)
    ax.set_xlim(0.0, 1.07)
    ax.set_xticks(np.linspace(0.0, 1.0, 11))
    ax.set_ylim(-0.6, n - 0.4 + (0.45 if compare is not None else 0.0))
    ax.set_xlabel("F1 (label: class, test support)")
    macro = report.get("macro_f1")
    if macro is not None:
        ax.axvline(macro, color="#333333", linestyle="--", linewidth=1, label=f"macro-F1 {macro:.3f}")
    # Above the plot: inside it would hide bars (the best classes reach 1.0 at the bottom).
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, ncol=3, frameon=False)
    ax.grid(axis="x", color="#dddddd", linewidth=0.5)
    ax.set_axisbelow(True)
    ax.set_title(title or "Per-class F1 (worst first)", fontsize=11, loc="left", pad=18 if n > 8 else 22)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_review_coverage(review: dict[str, Any], path: Path) -> Path:
    """Accuracy of the auto-accepted tickets against the share accepted, on the validation split
    (where the threshold is chosen) and the test split (how it does), with the target accuracy,
    the ceiling on the review share and the chosen threshold marked."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    for key, name, style in (("validation_curve", "validation", "-"), ("test_curve", "test", "--")):
        curve = review.get(key) or []
        if curve:
            ax.plot(
                [100 * p["coverage"] for p in curve],
                [100 * p["accepted_accuracy"] for p in curve],
                style,
                linewidth=1.6,
                label=f"{name} split",
            )
    target = review.get("target_accuracy")
    if target is not None:
        ax.axhline(100 * target, color="#2b8a3e", linestyle=":", linewidth=1.2, label=f"target {target:.1%}")
    ceiling = review.get("max_review_share")
    if ceiling is not None and ceiling < 1.0:
        ax.axvline(
            100 * (1 - ceiling),
            color="#c92a2a",
            linestyle=":",
            linewidth=1.2,
            label=f"review ceiling {ceiling:.0%} (accept at least {1 - ceiling:.0%})",
        )
    if review.get("review_share", 1.0) < 1.0 and not np.isnan(review.get("accepted_accuracy", np.nan)):
        ax.plot(
            [100 * (1 - review["review_share"])],
            [100 * review["accepted_accuracy"]],
            "o",
            color="#222222",
            label=f"threshold {review['threshold']:.3f}: {review['review_share']:.1%} to review",
        )
    ax.set_xlim(0, 100)
    ax.set_xlabel("tickets auto-accepted (%)  (the rest goes to review)")
    ax.set_ylabel("accuracy of the auto-accepted tickets (%)")
    ax.grid(color="#dddddd", linewidth=0.5)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("Review threshold: coverage vs accuracy (chosen on validation)", fontsize=11, loc="left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
