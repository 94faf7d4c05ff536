"""The methods of SPEC §7 compared under one protocol (the paper's Table 1).

Each method trains in ``OUT/<method>``. The ranking methods (RankNet,
DeepRankSVM, SpineRankNet) share their first phase: the weighted-CE phase 1 of
the ``ce`` run, from whose ``best_phase1.pt`` each starts phase 2. Every run is
then calibrated (ranking methods) and evaluated on the test split, and
``comparison.md`` / ``comparison.json`` (method -> metric -> {mean, std} over
tasks) are written. A run that finished is reused and an interrupted one resumes,
so running compare again after a failure loses nothing.
"""
from __future__ import annotations

import json
import math
import pathlib
import time

from . import config as config_lib
from . import methods as methods_lib
from .checkpoint import atomic_write_text, json_safe
from .progress import summaries

#: (key in metrics.json's aggregate, column title, larger is better)
COLUMNS = (("balanced_accuracy", "BA", True), ("roc_auc", "ROC-AUC", True), ("qwk", "QWK", True),
           ("mae", "MAE", False), ("mcc", "MCC", True), ("latent_spearman", "latent Spearman", True))
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


def compare(data: str, out: str, methods=("ce", "spinerank"), preset: str | None = None,
            config_file: str | None = None, tta: bool = True, device: str = "cpu", progress: bool = True,
            sequences=None, **overrides) -> dict:
    """Trains, calibrates and evaluates each method; returns comparison.json's content.
    ``sequences``: the test volumes scored (default: each disc's T2 volume)."""
    from .calibrate import normalize_sequences
    from .evaluate import evaluate

    sequences = normalize_sequences(sequences)
    started = time.perf_counter()
    methods = list(dict.fromkeys(methods))
    for name in methods:
        methods_lib.get(name)  # fails early on an unknown name
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ranking = [m for m in methods if methods_lib.get(m).ranking]
    # The ranking methods start phase 2 from the CE run's phase 1, trained even if CE is not compared.
    to_train = (["ce"] if ranking and "ce" not in methods else []) + methods
    for name in sorted(to_train, key=lambda m: m != "ce"):
        settings = dict(overrides, data=data, out=str(out / name), method=name, device=device, progress=progress)
        if name in ranking:
            settings["init_phase1"] = str(out / "ce" / "best_phase1.pt")
        else:  # rank_anchor (given or in the file) weighs a phase-2 ranking term: the ranking methods' runs only
            settings["rank_anchor"] = 0.0
        _train(out / name, config_lib.resolve(preset, config_file, **settings), progress)

    results = {}
    for name in methods:
        if summaries(progress):
            print(f"== evaluating {name}", flush=True)
        results[name] = evaluate(out / name, tta=tta, device=device, progress=progress, sequences=sequences)
    table = {name: {key: {"mean": r["aggregate"][key]["mean"], "std": r["aggregate"][key]["std"]}
                    for key, _, _ in COLUMNS if key in r["aggregate"]}
             for name, r in results.items()}
    first = next(iter(results.values()), {})
    summary = {"data": str(data), "tta": tta, "methods": table, "sequences": list(sequences),
               "unit": first.get("unit", ""), "volumes": first.get("volumes", 0),
               "skipped_discs": first.get("skipped_discs", 0), "seconds": round(time.perf_counter() - started, 1)}
    atomic_write_text(out / "comparison.json", json.dumps(json_safe(summary), indent=2) + "\n")
    atomic_write_text(out / "comparison.md", comparison_markdown(summary))
    return summary


def comparison_markdown(summary: dict) -> str:
    """Table 1 layout: mean ± std over tasks; the best mean of each column in bold."""
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
    tta = "with TTA" if summary["tta"] else "without TTA"
    return (f"# Comparison on {summary['data']}\n\n{scope_line(summary)}, {tta}; "
            "mean ± std over tasks. Ranking methods are graded with thresholds calibrated on the "
            "validation split (same sequences and TTA); classifiers by their own rule.\n\n"
            + "\n".join(lines) + "\n")


def scope_line(summary: dict) -> str:
    """"Test split: 40 discs (T2 volume), n counts discs (T2 volume)" and the discs skipped, if any."""
    unit = summary.get("unit") or "volumes"
    text = f"Test split: {summary.get('volumes', 0)} {unit} (`n` counts {unit})"
    if summary.get("skipped_discs"):
        text += (f"; {summary['skipped_discs']} discs without a {' or '.join(summary.get('sequences', []))} "
                 "volume skipped")
    return text
