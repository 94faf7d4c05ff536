"""The evaluation report: ``report.md`` and its PNG plots (SPEC §9).

- ``scores_by_grade.png``: every test score per task, by true grade, with the thresholds;
- ``severity_strip.png``: per task, the scored volumes ordered by score (the paper's Fig. 2
  idea): the mid-sagittal slice, or the lateral slice of a left/right task;
- ``confusion.png``: the confusion matrix of each task;
- ``training_curves.png``: loss and selection metric per epoch, from metrics.jsonl.
"""
from __future__ import annotations

import json
import math
import pathlib

import numpy as np

STRIP_VOLUMES = 8
_SHOWN = (("balanced_accuracy", "BA"), ("roc_auc", "ROC-AUC"), ("qwk", "QWK"), ("mae", "MAE"), ("mcc", "MCC"),
          ("spearman", "Spearman"), ("c_index", "C-index"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _task_axes(plt, n: int, width: float, height: float, cols: int = 4):
    """A figure with one subplot per task (the spare ones hidden) and those subplots."""
    rows, cols = math.ceil(n / cols), min(n, cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def _save(fig, path, dpi: int) -> None:
    """The figure as a PNG, written atomically like every output file; then closed."""
    import matplotlib.pyplot as plt

    from .checkpoint import atomic_write

    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi), durable=False)
    finally:
        plt.close(fig)


def _fmt(value, digits=3) -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def plot_scores_by_grade(path, scores, grades, thresholds, tasks, scale):
    plt = _pyplot()
    fig, axes = _task_axes(plt, len(tasks), 3.2, 2.6)
    rng = np.random.default_rng(0)
    for t, ax in enumerate(axes):
        K = tasks.num_grades[t]
        keep = grades[:, t] >= 0
        y, s = grades[keep, t], scores[keep, t]
        ax.scatter(y + rng.uniform(-0.2, 0.2, y.size), s, s=6, alpha=0.5)
        for tau in thresholds[t]:
            ax.axhline(tau, color="tab:red", lw=0.8, ls="--")
        ax.set_xticks(range(K))
        ax.set_xlim(-0.5, K - 0.5)
        ax.set_ylim(-0.05 * scale, 1.05 * scale)
        ax.set_title(tasks.names[t], fontsize=9)
        ax.set_xlabel("true grade", fontsize=8)
        ax.set_ylabel("score", fontsize=8)
    fig.tight_layout()
    _save(fig, path, dpi=90)


def _slice_for(task_name: str, volume: np.ndarray) -> np.ndarray:
    """The slice that shows a task: a lateral one for the foramina (slice 0 is the
    patient's left), the middle one otherwise. ``volume`` is (D, H, W)."""
    D = volume.shape[0]
    if task_name.endswith("Left"):
        return volume[max(D // 2 - D // 3, 0)]
    if task_name.endswith("Right"):
        return volume[min(D // 2 + D // 3, D - 1)]
    return volume[D // 2]


def plot_severity_strip(path, dataset, scores, grades, tasks):
    plt = _pyplot()
    T = len(tasks)
    fig, axes = plt.subplots(T, STRIP_VOLUMES, figsize=(1.4 * STRIP_VOLUMES, 1.15 * T), squeeze=False)
    cache: dict[int, np.ndarray] = {}
    for t in range(T):
        labelled = np.flatnonzero(grades[:, t] >= 0)
        order = labelled[np.argsort(scores[labelled, t], kind="stable")]
        picks = order[np.unique(np.linspace(0, order.size - 1, STRIP_VOLUMES).round().astype(int))] \
            if order.size else []
        for c, ax in enumerate(axes[t]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(picks):
                ax.axis("off")
                continue
            i = int(picks[c])
            if i not in cache:
                cache[i] = dataset[i][0][0].numpy()
            ax.imshow(_slice_for(tasks.names[t], cache[i]), cmap="gray")
            ax.set_title(f"{scores[i, t]:.1f} (g{grades[i, t]})", fontsize=7)
        axes[t][0].set_ylabel(tasks.names[t], fontsize=6, rotation=0, ha="right", va="center")
    fig.suptitle("test rows ordered by score (true grade in brackets)", fontsize=9)
    fig.tight_layout()
    _save(fig, path, dpi=80)


def plot_confusion(path, grades, predicted, tasks):
    plt = _pyplot()
    fig, axes = _task_axes(plt, len(tasks), 2.8, 2.6)
    for t, ax in enumerate(axes):
        K = tasks.num_grades[t]
        keep = grades[:, t] >= 0
        confusion = np.zeros((K, K), dtype=int)
        np.add.at(confusion, (grades[keep, t], predicted[keep, t]), 1)
        ax.imshow(confusion / np.maximum(confusion.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
        for (i, j), n in np.ndenumerate(confusion):
            ax.text(j, i, str(n), ha="center", va="center", fontsize=7)
        ax.set_xticks(range(K))
        ax.set_yticks(range(K))
        ax.set_title(tasks.names[t], fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    fig.tight_layout()
    _save(fig, path, dpi=90)


def read_history(run) -> list[dict]:
    path = pathlib.Path(run) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_training_curves(path, history):
    plt = _pyplot()
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(9, 3.2))
    for phase, label in ((1, "phase 1 (BA)"), (2, "phase 2 (QWK)")):
        h = [r for r in history if r["phase"] == phase]
        if not h:
            continue
        epochs = [r["epoch"] for r in h]
        loss_ax.plot(epochs, [r["train_loss"] for r in h], marker=".", label=f"phase {phase}")
        metric_ax.plot(epochs, [np.nan if r["selection_metric"] is None else r["selection_metric"] for r in h],
                       marker=".", label=label)
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="training loss")
    metric_ax.set(xlabel="epoch", ylabel="mean over tasks", title="validation selection metric")
    for ax in (loss_ax, metric_ax):
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path, dpi=90)


def write_report(out, result: dict, *, run, dataset, predictions, grades, predicted, thresholds, tasks,
                 scale: float) -> None:
    """Plots and report.md in ``out``."""
    from .checkpoint import atomic_write_text

    out = pathlib.Path(out)
    plot_scores_by_grade(out / "scores_by_grade.png", predictions.scores, grades, thresholds, tasks, scale)
    plot_severity_strip(out / "severity_strip.png", dataset, predictions.scores, grades, tasks)
    plot_confusion(out / "confusion.png", grades, predicted, tasks)
    history = read_history(run)
    if history:
        plot_training_curves(out / "training_curves.png", history)
    atomic_write_text(out / "report.md", report_markdown(result, bool(history)))


_BINARY = (("normal_auc", "ROC-AUC"), ("sensitivity", "sensitivity"), ("specificity", "specificity"),
           ("boundary_auc_mean", "mean per-boundary ROC-AUC"))


def _cell(agg, key) -> str:
    return f"{_fmt(agg[key]['mean'])} ± {_fmt(agg[key]['std'])}"


def report_markdown(result: dict, curves: bool) -> str:
    agg = result["aggregate"]
    unit = result.get("unit", "volumes")
    skipped = result.get("skipped_discs", 0)
    scope = f"{result['volumes']} {unit}"
    if skipped:
        scope += f" ({skipped} discs without a {' or '.join(result.get('sequences', []))} volume skipped)"
    lines = [f"# Evaluation: {result['method']} ({result['run']})", "",
             f"Test split, {scope}, "
             f"{'TTA over ' + str(result['views']) + ' views' if result['tta'] else 'no TTA (centre crop)'}; "
             f"grades from {result['grading']}. `n` counts {unit}.", "", "## Mean ± std over tasks", "",
             "| " + " | ".join(label for _, label in _SHOWN) + (" | latent Spearman |" if "latent_spearman" in agg else " |"),
             "|" + "---|" * (len(_SHOWN) + ("latent_spearman" in agg))]
    cells = [_cell(agg, k) for k, _ in _SHOWN]
    if "latent_spearman" in agg:
        cells.append(_cell(agg, "latent_spearman"))
    lines += ["| " + " | ".join(cells) + " |", ""]
    if all(k in agg for k, _ in _BINARY):
        lines += ["Normal (grade 0) vs abnormal (grade ≥ 1): ROC-AUC of the score; sensitivity and specificity of "
                  "the predicted grades (at the threshold between grades 0 and 1). Per boundary: ROC-AUC of the "
                  "score for grade > k.", "",
                  "| " + " | ".join(label for _, label in _BINARY) + " |", "|" + "---|" * len(_BINARY),
                  "| " + " | ".join(_cell(agg, k) for k, _ in _BINARY) + " |", ""]
    lines += ["## Per task", "",
              "| task | n | " + " | ".join(label for _, label in _SHOWN) + " | thresholds |",
              "|---|---|" + "---|" * (len(_SHOWN) + 1)]
    for name, m in result["tasks"].items():
        tau = ", ".join(f"{v:.2f}" for v in result["thresholds"][name])
        lines.append(f"| {name} | {m['n']} | " + " | ".join(_fmt(m.get(k)) for k, _ in _SHOWN) + f" | {tau} |")
    if any("normal_auc" in m for m in result["tasks"].values()):
        lines += ["", "| task | n | normal vs abnormal ROC-AUC | sensitivity | specificity | "
                  "ROC-AUC of grade > k, k = 0, 1, ... |", "|---|---|---|---|---|---|"]
        for name, m in result["tasks"].items():
            boundary = " / ".join(_fmt(v) for v in m.get("boundary_auc") or [])
            lines.append(f"| {name} | {m['n']} | {_fmt(m.get('normal_auc'))} | {_fmt(m.get('sensitivity'))} | "
                         f"{_fmt(m.get('specificity'))} | {boundary} |")
    if "latent_spearman" in agg:
        lines += ["", "Synthetic cohort: Spearman of the score against the hidden severity, overall and within "
                  f"grade (mean over tasks and grades): {_fmt(agg['latent_spearman']['mean'])} and "
                  f"{_fmt(agg['latent_spearman_within_grade']['mean'])}."]
    if "rsna_2024" in result:
        lines += rsna_lines(result["rsna_2024"])
    lines += ["", "## Plots", "", "![scores by grade](scores_by_grade.png)", "",
              "![severity strip](severity_strip.png)", "", "![confusion matrices](confusion.png)", ""]
    if curves:
        lines += ["![training curves](training_curves.png)", ""]
    return "\n".join(lines)


def rsna_lines(rsna: dict) -> list[str]:
    """The RSNA 2024 competition score and its four terms (a term without scored rows: –)."""
    terms = ("spinal", "foraminal", "subarticular", "any_severe_spinal")
    counts = [str(rsna["rows"][t]) for t in terms[:3]] + [f"{rsna['studies']} studies"]
    left_out = f"; left out (no scored rows): {', '.join(rsna['left_out'])}" if rsna.get("left_out") else ""
    return ["", "## RSNA 2024 competition metric", "",
            "Weighted log loss (sample weights 1/2/4 for Normal-Mild/Moderate/Severe); score = mean of the four "
            f"terms (lower is better); n: scored (disc, condition) pairs, and studies for any_severe_spinal{left_out}.",
            "", "| score | " + " | ".join(terms) + " |", "|---|" + "---|" * len(terms),
            f"| {_fmt(rsna['score'], 4)} | " + " | ".join(_fmt(rsna[t], 4) for t in terms) + " |",
            "| n | " + " | ".join(counts) + " |"]
