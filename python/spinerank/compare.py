"""The methods of SPEC §7 compared under one protocol (the paper's Table 1), over seeds.

Each method trains in ``OUT/<method>``, or with ``seeds`` once per seed in
``OUT/seed-<s>/<method>``. The ranking methods (RankNet, DeepRankSVM,
SpineRankNet) share their first phase: the weighted-CE phase 1 of the same
seed's ``ce`` run, from whose ``best_phase1.pt`` each starts phase 2. Every run
is then calibrated (ranking methods) and evaluated on the test split.

``comparison.md`` leads with the paired differences of each method against CE
(``bootstrap``: 95 % intervals over the test discs, pooled over seeds), then the
table (mean ± std over tasks for one seed, over seeds of the task-means for
several), the per-task differences and ``comparison.png`` (per task, each
method's QWK and MAE over seeds); ``comparison.json`` holds all of it. With
seeds, each ``seed-<s>/`` has its own tables too. A run that finished is reused
and an interrupted one resumes, so running compare again after a failure loses
nothing.
"""
from __future__ import annotations

import json
import math
import pathlib
import time

import numpy as np

from . import config as config_lib
from . import methods as methods_lib
from .checkpoint import atomic_write_text, json_safe
from .progress import summaries

#: (key in metrics.json's aggregate, column title, larger is better)
COLUMNS = (("balanced_accuracy", "BA", True), ("roc_auc", "ROC-AUC", True), ("qwk", "QWK", True),
           ("mae", "MAE", False), ("mcc", "MCC", True), ("latent_spearman", "latent Spearman", True),
           ("latent_spearman_within_grade", "within-grade latent Spearman", True))
DONE_FILE = "trained.json"


def _train(run: pathlib.Path, config: config_lib.TrainConfig, progress: bool) -> None:
    """Trains into ``run`` unless it finished before; resumes an interrupted run."""
    from .train import Trainer

    if (run / DONE_FILE).exists():
        if summaries(progress):
            print(f"{run}: trained before, reusing it", flush=True)
        return
    resume = (run / "last.pt").exists()
    if resume:
        config = config_lib.TrainConfig(**{**config_lib.load_file(run / "config.json"), "data": config.data,
                                           "out": config.out, "progress": progress, "device": config.device})
    if summaries(progress):
        print(f"== training {config.method} in {run}{' (resuming)' if resume else ''}", flush=True)
    result = Trainer(config).run(resume=resume)
    atomic_write_text(run / DONE_FILE, json.dumps(result) + "\n")


def _train_all(folder: pathlib.Path, methods: list[str], ranking: list[str], data: str, preset, config_file,
               device: str, progress: bool, overrides: dict) -> None:
    """Trains every method of one seed in ``folder``: CE first, whose phase 1 the ranking methods start from."""
    to_train = (["ce"] if ranking and "ce" not in methods else []) + methods
    for name in sorted(to_train, key=lambda m: m != "ce"):
        settings = dict(overrides, data=data, out=str(folder / name), method=name, device=device, progress=progress)
        if name in ranking:
            settings["init_phase1"] = str(folder / "ce" / "best_phase1.pt")
        else:  # rank_anchor (given or in the file) weighs a phase-2 ranking term: the ranking methods' runs only
            settings["rank_anchor"] = 0.0
        _train(folder / name, config_lib.resolve(preset, config_file, **settings), progress)


def compare(data: str, out: str, methods=("ce", "spinerank"), preset: str | None = None,
            config_file: str | None = None, tta: bool = True, device: str = "cpu", progress: bool = True,
            sequences=None, seeds=None, **overrides) -> dict:
    """Trains, calibrates and evaluates each method; returns comparison.json's content.
    ``sequences``: the test volumes scored (default: each disc's T2 volume).
    ``seeds``: train every method once per seed, in ``OUT/seed-<s>/<method>``
    (default: one run per method in ``OUT/<method>``, with the configured seed)."""
    from .calibrate import normalize_sequences
    from .evaluate import evaluate

    sequences = normalize_sequences(sequences)
    started = time.perf_counter()
    methods = list(dict.fromkeys(methods))
    for name in methods:
        methods_lib.get(name)  # fails early on an unknown name
    seeds = None if seeds is None else list(dict.fromkeys(int(s) for s in seeds))
    if seeds is not None and not seeds:
        raise ValueError("seeds: give one or more training seeds")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ranking = [m for m in methods if methods_lib.get(m).ranking]
    folders = {None: out} if seeds is None else {s: out / f"seed-{s}" for s in seeds}

    results = {}  # seed -> method -> metrics.json content
    for seed, folder in folders.items():
        settings = overrides if seed is None else dict(overrides, seed=seed)
        if seed is not None and summaries(progress):
            print(f"== seed {seed} in {folder}", flush=True)
        _train_all(folder, methods, ranking, data, preset, config_file, device, progress, settings)
        results[seed] = {}
        for name in methods:
            if summaries(progress):
                print(f"== evaluating {name}" + (f" (seed {seed})" if seed is not None else ""), flush=True)
            results[seed][name] = evaluate(folder / name, tta=tta, device=device, progress=progress,
                                           sequences=sequences)
        if seed is not None:  # each seed's own tables, as a one-seed compare writes them
            _write(folder, _summary(data, tta, sequences, {None: results[seed]}, methods, None))

    summary = _summary(data, tta, sequences, results, methods, seeds)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    _write(out, summary)
    return summary


def _summary(data, tta, sequences, results: dict, methods: list[str], seeds) -> dict:
    """comparison.json: the table (mean ± std over tasks for one run per method,
    over seeds of the task-means otherwise), each run's per-task QWK and MAE, and
    the paired differences against CE."""
    from .bootstrap import load_outcome, paired_differences
    from .evaluate import OUTCOME_FILE, default_out

    by_seed = list(results.values())
    first = by_seed[0][methods[0]]
    if seeds is None:
        table = {name: {key: {"mean": r["aggregate"][key]["mean"], "std": r["aggregate"][key]["std"]}
                        for key, _, _ in COLUMNS if key in r["aggregate"]}
                 for name, r in by_seed[0].items()}
    else:
        table = {name: {key: _mean_std([r[name]["aggregate"][key]["mean"] for r in by_seed])
                        for key, _, _ in COLUMNS if key in first["aggregate"]} for name in methods}
    per_task = {name: {task: {key: [r[name]["tasks"][task].get(key) for r in by_seed] for key in ("qwk", "mae")}
                       for task in first["tasks"]} for name in methods}
    summary = {"data": str(data), "tta": tta, "methods": table, "sequences": list(sequences),
               "seeds": seeds, "spread": "tasks" if seeds is None else "seeds", "tasks": per_task,
               "unit": first.get("unit", ""), "volumes": first.get("volumes", 0),
               "skipped_discs": first.get("skipped_discs", 0)}
    if "ce" in methods and len(methods) > 1:
        outcomes = {name: [load_outcome(default_out(r[name]["run"], tta) / OUTCOME_FILE) for r in by_seed]
                    for name in methods}
        summary["paired"] = paired_differences(outcomes, "ce", task_names=list(first["tasks"]))
    return summary


def _mean_std(values) -> dict:
    values = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    finite = values[np.isfinite(values)]
    return {"mean": float(finite.mean()) if finite.size else float("nan"),
            "std": float(finite.std()) if finite.size else float("nan"), "values": values.tolist()}


def _write(folder: pathlib.Path, summary: dict) -> None:
    atomic_write_text(folder / "comparison.json", json.dumps(json_safe(summary), indent=2) + "\n")
    figure = None
    if summary.get("tasks"):
        from .compare_plot import plot_comparison

        figure = "comparison.png"
        plot_comparison(folder / figure, summary, title=f"spinerank compare on {summary['data']}")
    atomic_write_text(folder / "comparison.md", comparison_markdown(summary, figure=figure))


PAIRED_TITLES = {"qwk": "QWK", "mae": "MAE", "balanced_accuracy": "BA", "mcc": "MCC", "roc_auc": "ROC-AUC",
                 "latent_spearman_within_grade": "within-grade latent Spearman"}


def comparison_markdown(summary: dict, figure: str | None = None) -> str:
    """The paired differences against CE first (where CE was compared), then Table 1's
    layout (mean ± std; the best mean of each column in bold), the per-task
    differences, the figure and, with several seeds, where each seed's tables are."""
    tta = "with TTA" if summary["tta"] else "without TTA"
    seeds = summary.get("seeds")
    runs = (f"seeds {', '.join(map(str, seeds))}, each method trained once per seed, the ranking methods from "
            "that seed's CE phase 1" if seeds else "one training run per method")
    text = [f"# Comparison on {summary['data']}", "", f"{scope_line(summary)}, {tta}; {runs}. Ranking methods are "
            "graded with thresholds calibrated on the validation split (same sequences and TTA); classifiers by "
            "their own rule.", ""]
    paired = summary.get("paired")
    if paired:
        text += paired_markdown(paired)
    spread = ("mean ± std over seeds of each run's mean over tasks" if summary.get("spread") == "seeds"
              else "mean ± std over tasks")
    text += [f"## Each method: {spread}", "", *table_lines(summary), ""]
    if paired:
        text += per_task_markdown(paired)
    if figure:
        text += ["## Per task", "", f"![per-task QWK and MAE of each method]({figure})", "",
                 "Each task's QWK (left) and MAE (right) per method: the mean over seeds, with a bar from the lowest "
                 "to the highest seed and one dot per seed." if seeds and len(seeds) > 1 else
                 "Each task's QWK (left) and MAE (right) per method, one run each.", ""]
    if seeds:
        text += ["Each seed's own tables: " + ", ".join(f"[seed {s}](seed-{s}/comparison.md)" for s in seeds) + ".",
                 ""]
    return "\n".join(text)


def table_lines(summary: dict) -> list[str]:
    """Table 1's rows: mean ± std per method and metric; the best mean of each column in bold."""
    methods = summary["methods"]
    columns = [c for c in COLUMNS if any(c[0] in m for m in methods.values())]
    best = {}
    for key, _, larger in columns:
        values = [m[key]["mean"] for m in methods.values() if key in m and m[key]["mean"] is not None
                  and math.isfinite(m[key]["mean"])]
        if values:
            best[key] = max(values) if larger else min(values)

    def cell(m, key):
        if key not in m or m[key]["mean"] is None or not math.isfinite(m[key]["mean"]):
            return "–"
        text = f"{m[key]['mean']:.3f} ± {m[key]['std']:.3f}"
        return f"**{text}**" if m[key]["mean"] == best.get(key) else text

    lines = ["| method | " + " | ".join(title + (" ↑" if larger else " ↓") for _, title, larger in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for name, m in methods.items():
        lines.append(f"| {name} | " + " | ".join(cell(m, key) for key, _, _ in columns) + " |")
    return lines


def difference_cell(d: dict) -> str:
    """"+0.041 [+0.012, +0.069]", in bold where the interval excludes 0."""
    if d["diff"] is None or not math.isfinite(d["diff"]):
        return "–"
    low, high = d["ci"]
    text = f"{d['diff']:+.3f} [{low:+.3f}, {high:+.3f}]"
    return f"**{text}**" if low > 0 or high < 0 else text


def paired_markdown(paired: dict) -> list[str]:
    """Each method − the baseline: task-mean differences with their 95 % intervals."""
    keys = [k for k in PAIRED_TITLES if any(k in m["mean"] for m in paired["methods"].values())]
    base = paired["baseline"]
    seeds = paired["seeds"]
    lines = [f"## Against {base}: paired differences", "",
             f"Each method's mean over tasks minus {base}'s, "
             + (f"averaged over the {seeds} seeds, " if seeds > 1 else "")
             + f"with a 95 % paired-bootstrap interval over the {paired['discs']} test discs "
             f"({paired['replicates']} resamples); in bold where the interval excludes 0. "
             "For MAE lower is better: a negative difference favours the method.", "",
             "| method | " + " | ".join(f"Δ {PAIRED_TITLES[k]}" for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for name, m in paired["methods"].items():
        lines.append(f"| {name} | " + " | ".join(difference_cell(m["mean"][k]) if k in m["mean"] else "–" for k in keys)
                     + " |")
    if seeds > 1:
        lines += ["", "Std over seeds of each seed's difference: " + "; ".join(
            f"{name}: " + ", ".join(f"{PAIRED_TITLES[k]} {m['mean'][k]['seed_std']:.3f}" for k in ("qwk", "mae")
                                   if k in m["mean"]) for name, m in paired["methods"].items()) + "."]
    lines += ["", "Procedure: " + " ".join(line.strip() for line in paired["procedure"].splitlines()), ""]
    return lines


def per_task_markdown(paired: dict) -> list[str]:
    """Per task and method: the differences of QWK, MAE and BA against the baseline."""
    keys = ("qwk", "mae", "balanced_accuracy")
    base = paired["baseline"]
    lines = [f"## Per task against {base}", "",
             "| task | method | " + " | ".join(f"Δ {PAIRED_TITLES[k]}" for k in keys) + " |",
             "|---|---|" + "---|" * len(keys)]
    tasks = next(iter(paired["methods"].values()))["tasks"] if paired["methods"] else {}
    for task in tasks:
        for name, m in paired["methods"].items():
            values = m["tasks"][task]
            lines.append(f"| {task} | {name} | " + " | ".join(difference_cell(values[k]) if k in values else "–"
                                                               for k in keys) + " |")
    return lines + [""]


def scope_line(summary: dict) -> str:
    """"Test split: 40 discs (T2 volume), n counts discs (T2 volume)" and the discs skipped, if any."""
    unit = summary.get("unit") or "volumes"
    text = f"Test split: {summary.get('volumes', 0)} {unit} (`n` counts {unit})"
    if summary.get("skipped_discs"):
        text += (f"; {summary['skipped_discs']} discs without a {' or '.join(summary.get('sequences', []))} "
                 "volume skipped")
    return text
