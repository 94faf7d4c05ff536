"""The evaluation report: ``report.md`` and its PNG plots (SPEC §9).

Every figure's title names the method and the run folder.

- ``scores_by_grade.png``: every test row's severity (the calibrated map of its
  score to 0–S, ``spinerank.severity``) per task, by true grade, with each
  grade's median; for the ranking methods also the fixed grade boundaries
  (k - ½) S / (K - 1) where the calibrated thresholds land. Classifiers grade by
  their own rule, so they get no boundary lines;
- ``severity_strip.png``: per task, test rows at evenly spaced quantiles of
  severity (the least to the most severe), ordered by severity (the paper's
  Fig. 2 idea): the mid-sagittal slice, or the lateral slice of a left/right
  task, labelled with severity, true grade and sequence;
- ``confusion.png``: the confusion matrix of each task, counts in the cells,
  colour the fraction of the true grade's rows (row-normalised), with a colour bar;
- ``training_curves.png``: training loss and validation selection metric per
  epoch, phase 1 then phase 2, from metrics.jsonl; a phase 1 reused from
  another run (``init_phase1``) is read from that run's metrics.jsonl, drawn
  dashed and named.

Each plot function returns its figure's description (what it drew), which the
tests check.
"""
from __future__ import annotations

import json
import math
import os
import pathlib

import numpy as np

STRIP_VOLUMES = 8
_SHOWN = (("balanced_accuracy", "BA"), ("roc_auc", "ROC-AUC"), ("qwk", "QWK"), ("mae", "MAE"), ("mcc", "MCC"),
          ("spearman", "Spearman"), ("c_index", "C-index"))
BOUNDARY_LABEL = "grade boundaries (calibrated thresholds)"


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


def run_label(run) -> str:
    """The run folder as a figure names it: the last two parts of its path (``compare/spinerank``)."""
    parts = pathlib.Path(str(run)).parts
    return "/".join(parts[-2:]) if len(parts) > 2 else str(run)


def _heading(method: str, run) -> str:
    return f"{method} — run {run_label(run)}"


def _row_unit(unit: str) -> str:
    """"discs" or "volumes": what a row of the test split is."""
    return "volumes" if str(unit).startswith("volumes") else "discs"


def plot_scores_by_grade(path, severity, grades, boundaries, tasks, scale, *, method: str = "", run="",
                         unit: str = "discs") -> dict:
    """Severity by true grade per task. ``boundaries``: per task the severity
    boundaries to draw (the ranking methods' calibrated thresholds, mapped), or
    None (a classifier: nothing drawn). Returns {"boundaries": {task: [...]}} of
    the lines drawn."""
    plt = _pyplot()
    fig, axes = _task_axes(plt, len(tasks), 3.3, 2.9)
    rng = np.random.default_rng(0)
    drawn = {}
    for t, ax in enumerate(axes):
        K = tasks.num_grades[t]
        keep = grades[:, t] >= 0
        y, s = grades[keep, t], severity[keep, t]
        ax.scatter(y + rng.uniform(-0.22, 0.22, y.size), s, s=9, alpha=0.6, color="tab:blue", linewidths=0,
                   zorder=3, label=f"test {_row_unit(unit)}")
        medians = [(k, float(np.median(s[y == k]))) for k in range(K) if (y == k).any()]
        if medians:
            ax.hlines([m for _, m in medians], [k - 0.3 for k, _ in medians], [k + 0.3 for k, _ in medians],
                      color="black", alpha=0.7, lw=1.5, zorder=2, label="median of the grade")
        drawn[tasks.names[t]] = []
        if boundaries is not None:
            for i, b in enumerate(boundaries[t]):
                ax.axhline(b, color="tab:red", lw=0.9, ls="--", label=BOUNDARY_LABEL if i == 0 else None)
                drawn[tasks.names[t]].append(float(b))
        ax.set_xticks(range(K))
        ax.set_xlim(-0.5, K - 0.5)
        ax.set_ylim(-0.05 * scale, 1.05 * scale)
        ax.set_title(tasks.names[t], fontsize=9)
        ax.set_xlabel("true grade", fontsize=8)
        ax.set_ylabel(f"severity (0–{scale:g})", fontsize=8)
        ax.tick_params(labelsize=7)
    handles, labels = axes[0].get_legend_handles_labels() if axes else ([], [])
    note = ("" if boundaries is not None else
            "; graded by the classifier's own rule (no thresholds)")
    fig.suptitle(f"{_heading(method, run)}: test severity by true grade{note}", fontsize=10)
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 0.97))
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(handles), fontsize=8, frameon=False,
                   markerscale=1.5)
    _save(fig, path, dpi=90)
    return {"boundaries": drawn, "legend": labels}


def _slice_for(task_name: str, volume: np.ndarray) -> np.ndarray:
    """The slice that shows a task: a lateral one for the foramina (slice 0 is the
    patient's left), the middle one otherwise. ``volume`` is (D, H, W)."""
    D = volume.shape[0]
    if task_name.endswith("Left"):
        return volume[max(D // 2 - D // 3, 0)]
    if task_name.endswith("Right"):
        return volume[min(D // 2 + D // 3, D - 1)]
    return volume[D // 2]


def strip_picks(severity: np.ndarray, count: int = STRIP_VOLUMES) -> np.ndarray:
    """Row indices of ``count`` rows (fewer if there are fewer) at evenly spaced
    quantiles of ``severity`` (its minimum, …, its maximum), in order of severity."""
    order = np.argsort(severity, kind="stable")
    if order.size == 0:
        return order
    return order[np.unique(np.linspace(0, order.size - 1, count).round().astype(int))]


def plot_severity_strip(path, dataset, severity, grades, tasks, *, method: str = "", run="",
                        unit: str = "discs", scale: float = 10.0) -> dict:
    """Per task (a row), test rows at evenly spaced quantiles of severity, ordered
    by it. Returns {"picks": {task: [row index, ...]}, "labels": {task: [...]}}."""
    plt = _pyplot()
    T = len(tasks)
    items = getattr(dataset, "items", None)
    cache: dict[int, np.ndarray] = {}
    picks_of = []
    for t in range(T):
        labelled = np.flatnonzero(grades[:, t] >= 0)
        picks_of.append(labelled[strip_picks(severity[labelled, t])])
    shown = sorted({int(i) for picks in picks_of for i in picks})
    sequences = sorted({getattr(items[i][0], "sequence", "") for i in shown}) if items is not None else []
    per_image = len(sequences) > 1  # one sequence: said once in the title
    if shown:
        cache[shown[0]] = dataset[shown[0]][0][0].numpy()
        height, width = cache[shown[0]].shape[1:]
    else:
        height, width = 1, 1
    cell = 1.5
    fig, axes = plt.subplots(T, STRIP_VOLUMES, squeeze=False,
                             figsize=(cell * STRIP_VOLUMES + 1.8, T * (cell * height / width + 0.32) + 0.8))
    drawn = {"picks": {}, "labels": {}}
    for t in range(T):
        picks = picks_of[t]
        drawn["picks"][tasks.names[t]] = [int(i) for i in picks]
        drawn["labels"][tasks.names[t]] = []
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
            sequence = getattr(items[i][0], "sequence", "") if per_image else ""
            label = f"{severity[i, t]:.1f} (g{grades[i, t]})" + (f" {sequence}" if sequence else "")
            drawn["labels"][tasks.names[t]].append(label)
            ax.set_title(label, fontsize=8, pad=2)
        axes[t][0].set_ylabel(tasks.names[t], fontsize=8, rotation=0, ha="right", va="center", labelpad=4)
    rows = _row_unit(unit)
    which = (f"every image a {sequences[0]} volume" if len(sequences) == 1 else
             "sequence after the grade" if per_image else "")
    drawn["sequences"] = sequences
    fig.suptitle(f"{_heading(method, run)}: {STRIP_VOLUMES} test {rows} per task at evenly spaced quantiles of "
                 f"severity, least to most severe\nmid-sagittal slice (lateral for Left/Right tasks); "
                 f"above each: severity 0–{scale:g} (true grade g)" + (f"; {which}" if which else ""), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    _save(fig, path, dpi=90)
    return drawn


def plot_confusion(path, grades, predicted, tasks, *, method: str = "", run="", unit: str = "discs",
                   grading: str = "") -> dict:
    """Per task the confusion matrix: counts in the cells, the colour the
    fraction of the true grade's rows (each row sums to 1), a shared colour bar.
    Returns {"counts": {task: matrix as lists}}."""
    plt = _pyplot()
    fig, axes = _task_axes(plt, len(tasks), 3.1, 2.8)
    drawn = {"counts": {}}
    image = None
    for t, ax in enumerate(axes):
        K = tasks.num_grades[t]
        keep = grades[:, t] >= 0
        confusion = np.zeros((K, K), dtype=int)
        np.add.at(confusion, (grades[keep, t], predicted[keep, t]), 1)
        fraction = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
        image = ax.imshow(fraction, cmap="Blues", vmin=0, vmax=1)
        for (i, j), n in np.ndenumerate(confusion):
            ax.text(j, i, str(n), ha="center", va="center", fontsize=8,
                    color="white" if fraction[i, j] > 0.6 else "black")
        drawn["counts"][tasks.names[t]] = confusion.tolist()
        ax.set_xticks(range(K))
        ax.set_yticks(range(K), [f"{k} (n={n})" for k, n in enumerate(confusion.sum(1))])
        ax.tick_params(labelsize=7)
        ax.set_title(tasks.names[t], fontsize=9)
        ax.set_xlabel("predicted grade", fontsize=8)
        ax.set_ylabel("true grade", fontsize=8)
    rows = _row_unit(unit)
    fig.suptitle(f"{_heading(method, run)}: confusion matrices (test {rows}; counts in cells"
                 + (f"; grades from {grading}" if grading else "") + ")", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.9, 0.95))
    if image is not None:
        bar = fig.colorbar(image, ax=axes, fraction=0.025, pad=0.02)
        bar.set_label(f"fraction of the true grade's {rows}", fontsize=8)
        bar.ax.tick_params(labelsize=7)
        drawn["colorbar"] = bar.ax.get_ylabel()
    _save(fig, path, dpi=90)
    return drawn


def read_history(run) -> list[dict]:
    path = pathlib.Path(run) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def reused_phase1(run, init_phase1: str | None) -> tuple[str, list[dict]] | None:
    """(how to name it, its phase-1 history) of the run whose phase-1 checkpoint
    ``init_phase1`` started this run's phase 2: "../ce" (relative to ``run``)
    and that folder's metrics.jsonl rows of phase 1 (empty if it has none or is
    gone). None without ``init_phase1``."""
    if not init_phase1:
        return None
    source = pathlib.Path(init_phase1).parent
    try:
        name = os.path.relpath(source.resolve(), pathlib.Path(run).resolve())
    except ValueError:  # another drive
        name = str(source)
    try:
        history = [h for h in read_history(source) if h.get("phase") == 1]
    except (OSError, ValueError):
        history = []
    return name, history


def plot_training_curves(path, history, *, method: str = "", run="", reused=None,
                         phase2_metric: str = "QWK") -> dict:
    """Training loss and validation selection metric per epoch: phase 1, then
    phase 2 on the same epoch axis (its epochs follow phase 1's), each phase's
    selected (best) epoch starred. The two phases minimise different losses, so
    phase 2's loss has its own axis on the right. ``reused``: (name, phase-1
    history) of the run whose phase 1 this one started from (``reused_phase1``),
    drawn dashed. Returns {"lines": [legend entry, ...]}."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(10, 3.9))
    own1 = [r for r in history if r["phase"] == 1]
    own2 = [r for r in history if r["phase"] == 2]
    phase1, style1, name1 = own1, "-", "phase 1 (this run)"
    if not own1 and reused is not None:
        phase1, style1, name1 = reused[1], "--", f"phase 1 (from {reused[0]})"
    both = bool(phase1 and own2)
    offset = max((r["epoch"] for r in phase1), default=0)
    loss2_ax = loss_ax.twinx() if both else loss_ax
    handles, entries = [], []
    for rows, style, name, selection, shift, colour, ax in (
            (phase1, style1, name1, "selected by mean balanced accuracy of the classification heads", 0,
             "tab:blue", loss_ax),
            (own2, "-", "phase 2", f"selected by mean {phase2_metric} of the scores at the fixed thresholds",
             offset, "tab:orange", loss2_ax)):
        if not rows:
            continue
        epochs = np.array([r["epoch"] + shift for r in rows])
        ax.plot(epochs, [np.nan if r["train_loss"] is None else r["train_loss"] for r in rows], ls=style,
                marker=".", color=colour, label=name)
        metric = np.array([np.nan if r["selection_metric"] is None else r["selection_metric"] for r in rows],
                          dtype=float)
        line, = metric_ax.plot(epochs, metric, ls=style, marker=".", color=colour, label=name)
        handles.append(line)
        entries.append(f"{name}, {selection}")
        finite = np.isfinite(metric)
        if finite.any():
            best = int(np.flatnonzero(finite)[np.argmax(metric[finite])])  # the first best, as training keeps
            star, = metric_ax.plot(epochs[best], metric[best], marker="*", ms=11, color=colour, ls="none",
                                   markeredgecolor="black", markeredgewidth=0.5, label="_selected")
    if handles and any(np.isfinite(line.get_ydata()).any() for line in handles):
        handles.append(star)
        entries.append("selected epoch (best validation metric) of each phase")
    xlabel = "epoch (phase 2 numbered on after phase 1)" if both else "epoch"
    if both:
        for ax in (loss_ax, metric_ax):
            ax.axvline(offset + 0.5, color="grey", lw=0.8, ls=":")
        loss_ax.set_ylabel("phase 1 training loss", color="tab:blue")
        loss2_ax.set_ylabel("phase 2 training loss", color="tab:orange")
    else:
        loss_ax.set_ylabel("training loss")
    loss_ax.set(xlabel=xlabel, title="training loss")
    metric_ax.set(xlabel=xlabel, ylabel="validation, mean over tasks", title="validation selection metric")
    for ax in {loss_ax, loss2_ax, metric_ax}:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.title.set_fontsize(9)
        ax.tick_params(labelsize=7)
        ax.xaxis.label.set_fontsize(8)
        ax.yaxis.label.set_fontsize(8)
    missing = ""
    if reused is not None and not own1 and not reused[1]:
        missing = f"; phase 1 reused from {reused[0]}, whose metrics.jsonl was not found"
    elif not own2:
        missing = "; phase 1 only"
    fig.suptitle(f"{_heading(method, run)}: training curves{missing}", fontsize=10)
    fig.tight_layout(rect=(0, 0.05 * len(entries), 1, 1))
    if handles:
        fig.legend(handles, entries, loc="lower center", ncol=1, fontsize=8, frameon=False)
    _save(fig, path, dpi=90)
    return {"lines": entries}


def write_report(out, result: dict, *, run, dataset, predictions, grades, predicted, thresholds, tasks,
                 scale: float, severity=None, config=None) -> dict:
    """Plots and report.md in ``out``; returns what each plot drew (by file name).
    ``severity``: the (N, T) severities of the scores (default: the scores, the
    identity map); ``config``: the run's TrainConfig (for a reused phase 1)."""
    from .checkpoint import atomic_write_text
    from .severity import boundaries as severity_boundaries

    out = pathlib.Path(out)
    severity = predictions.scores if severity is None else severity
    method, unit = result["method"], result.get("unit", "discs")
    ranking = result.get("grading") != "classifier"
    drawn = {}
    lines = [severity_boundaries(K, scale) for K in tasks.num_grades] if ranking else None
    drawn["scores_by_grade.png"] = plot_scores_by_grade(out / "scores_by_grade.png", severity, grades, lines, tasks,
                                                        scale, method=method, run=run, unit=unit)
    drawn["severity_strip.png"] = plot_severity_strip(out / "severity_strip.png", dataset, severity, grades, tasks,
                                                      method=method, run=run, unit=unit, scale=scale)
    drawn["confusion.png"] = plot_confusion(out / "confusion.png", grades, predicted, tasks, method=method, run=run,
                                            unit=unit, grading=result.get("grading", ""))
    history = read_history(run)
    reused = reused_phase1(run, getattr(config, "init_phase1", None))
    metric = "QWK" if getattr(config, "phase2_selection", "qwk") == "qwk" else "balanced accuracy"
    if history or (reused and reused[1]):
        drawn["training_curves.png"] = plot_training_curves(out / "training_curves.png", history, method=method,
                                                            run=run, reused=reused, phase2_metric=metric)
    atomic_write_text(out / "report.md", report_markdown(result, "training_curves.png" in drawn,
                                                         reused=reused[0] if reused else None,
                                                         phase2_metric=metric))
    return drawn


_BINARY = (("normal_auc", "ROC-AUC"), ("sensitivity", "sensitivity"), ("specificity", "specificity"),
           ("boundary_auc_mean", "mean per-boundary ROC-AUC"))


def _cell(agg, key) -> str:
    return f"{_fmt(agg[key]['mean'])} ± {_fmt(agg[key]['std'])}"


def report_markdown(result: dict, curves: bool, reused: str | None = None, phase2_metric: str = "QWK") -> str:
    """report.md: the tables, then each plot with a caption saying what it shows.
    ``reused``: the run whose phase 1 this run started from (named in the curves' caption)."""
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
    lines += plot_lines(result, curves, reused, phase2_metric)
    return "\n".join(lines)


def plot_lines(result: dict, curves: bool, reused: str | None = None, phase2_metric: str = "QWK") -> list[str]:
    """The Plots section of report.md: each figure and its caption."""
    scale = float(result.get("score_scale", 10.0))
    rows = _row_unit(result.get("unit", "discs"))
    ranking = result.get("grading") != "classifier"
    identity = result.get("severity_map") == "identity"
    if ranking and not identity:
        severity = (f"Severity is the raw score mapped (strictly increasing, piecewise linear) so that each task's "
                    f"calibrated thresholds land on the fixed boundaries (k − ½)·{scale:g}/(K − 1); a row's grade is "
                    "the number of boundaries below its severity, the same grade the thresholds give its score, "
                    "and a severity means the same on every task and run. The raw-score thresholds are in the "
                    "per-task table; rank metrics are the same on score and severity.")
    else:
        severity = (f"Severity equals the score here (the identity map: "
                    + ("the classifier's expected grade × " f"{scale:g}/(K − 1)" if not ranking else
                       "the fixed thresholds") + ").")
    boundary = ("Dashed red lines: the grade boundaries, where the calibrated thresholds land. " if ranking else
                "No boundary lines: a classifier grades by its own rule (most probable class), not by thresholds. ")
    lines = ["", "## Plots", "", severity, "",
             "![scores by grade](scores_by_grade.png)", "",
             f"*Severity by true grade.* Each dot is a test {rows[:-1]} (jittered sideways), the black bar each "
             f"grade's median. {boundary}A good ranking keeps the grades' clouds apart and in order.", "",
             "![severity strip](severity_strip.png)", "",
             f"*Severity strip.* Per task, {STRIP_VOLUMES} test {rows} at evenly spaced quantiles of severity "
             "(the least severe on the left, the most severe on the right), the mid-sagittal slice (a lateral one "
             "for Left/Right tasks); above each: severity (true grade), and the volume's sequence when they differ "
             "(the title names it when all are one).", "",
             "![confusion matrices](confusion.png)", "",
             f"*Confusion matrices.* Rows true grade, columns predicted grade; numbers are counts of test {rows}, "
             "the colour the fraction of the true grade's rows (each row of colours sums to 1), so the diagonal's "
             "colour is each grade's recall.", ""]
    if curves:
        source = (f" Phase 1 was not trained here: phase 2 started from the phase-1 model of {reused}, whose "
                  "phase-1 curve is drawn dashed." if reused else "")
        phases = ("phase 1 (classification heads, mean balanced accuracy), then phase 2 (the ranking heads, mean "
                  f"{phase2_metric} of the scores at the fixed thresholds)" if ranking else
                  "phase 1 only (classification heads, mean balanced accuracy; a classifier has no phase 2)")
        lines += ["![training curves](training_curves.png)", "",
                  "*Training curves.* Training loss and the validation metric that selected the checkpoints, per "
                  f"epoch: {phases}.{source}", ""]
    return lines


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
