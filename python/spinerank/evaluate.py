"""A trained model on the test split (SPEC §9): metrics, predictions and a report.

Each test disc is scored once, on its T2 volume, by default (as the published
code evaluates; discs without one are skipped and counted); ``sequences`` selects
others, then rows are volumes. Every output says what ``n`` counts.

Grades come from the calibrated thresholds for the ranking methods (calibrated
first, with the same TTA setting and sequences, when ``RUN/thresholds.json`` is
missing or was fitted otherwise) and from the classifier's own rule otherwise.
On a synthetic cohort (``latent.csv`` beside ``labels.csv``) the scores are also
compared with the hidden severities. On an RSNA 2024 dataset (the five
conditions of ``rsna_metric`` in the task table) ``metrics.json`` also holds the
competition's score of the test rows, ``rsna_2024``.

Every score is also mapped to a severity on [0, S] (``spinerank.severity``): the
run's calibrated map, which sends the thresholds to the fixed boundaries
(k - ½) S / (K - 1), so that the grade is the number of those boundaries below
the severity and a severity means the same on every task and run (the identity
for the classifiers and for the fixed thresholds). The plots show severities;
the rank metrics are the score's, which the monotone map leaves unchanged.

Writes into ``--out`` (default ``RUN/eval`` or ``RUN/eval-no-tta``):
``metrics.json``, ``predictions.csv``, ``outcome.npz`` (the per-disc arrays, for
``spinerank compare``'s paired bootstrap), ``report.md`` and its PNG plots.
"""
from __future__ import annotations

import csv
import io
import json
import math
import pathlib
import time

import numpy as np

from . import bootstrap
from . import calibrate as calibrate_lib
from . import metrics as metrics_lib
from . import rsna_metric
from . import severity as severity_lib
from .checkpoint import atomic_write_text, json_safe
from .inference import Predictions
from .progress import summaries

#: The per-disc arrays of the evaluation (ids, grades, predicted grades, scores, probabilities, latent).
OUTCOME_FILE = "outcome.npz"


def read_latent(data_dir: str | pathlib.Path, task_names: list[str]) -> dict[str, np.ndarray] | None:
    """ivd_id -> hidden severity per task (nan where missing), or None without latent.csv."""
    path = pathlib.Path(data_dir) / "latent.csv"
    if not path.exists():
        return None
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if "ivd_id" not in (reader.fieldnames or []):
            raise ValueError(f"{path}: needs an ivd_id column")
        return {r["ivd_id"]: np.array([float(r[n]) if r.get(n) not in (None, "") else np.nan for n in task_names])
                for r in reader}


def borderline(scores: np.ndarray, std: np.ndarray, thresholds: list[np.ndarray]) -> np.ndarray:
    """(N, T) bool: a threshold lies within one TTA standard deviation of the score."""
    out = np.zeros(scores.shape, dtype=bool)
    for t, tau in enumerate(thresholds):
        if len(tau):
            gap = np.abs(scores[:, t, None] - np.asarray(tau)[None, :]).min(1)
            out[:, t] = gap <= std[:, t]
    return out


def evaluate(run: str | pathlib.Path, tta: bool = True, out: str | pathlib.Path | None = None,
             device: str = "cpu", progress: bool = True, report: bool = True, data: str | None = None,
             sequences=calibrate_lib.DEFAULT_SEQUENCES) -> dict:
    """Evaluates RUN/best.pt on the test split; returns the content of metrics.json.
    ``data``: the run's dataset where it is now, if it moved; ``sequences``: the
    volumes scored (default: each disc's T2 volume)."""
    run = pathlib.Path(run)
    started = time.perf_counter()
    sequences = calibrate_lib.normalize_sequences(sequences)
    predictor = calibrate_lib.run_predictor(run, device, data)
    tasks = predictor.tasks
    out = pathlib.Path(out) if out else default_out(run, tta)
    # The test volumes are checked before anything is written or scored (calibration included).
    test = calibrate_lib.split_dataset(predictor, "test", sequences, progress=progress)
    out.mkdir(parents=True, exist_ok=True)

    thresholds = _thresholds(run, predictor, tta, sequences, progress)
    maps = severity_lib.maps_for(thresholds, tasks.num_grades, predictor.scale)  # the identity for the fixed ones

    predictions, grades = predictor.predict_dataset(test, tta, progress=progress, desc="test scores")
    predicted = predictor.grades(predictions, thresholds if predictor.method.ranking else None)
    severity = severity_lib.severities(predictions.scores, maps)
    rows = [item[0] for item in test.items]
    latent = read_latent(predictor.config.data, tasks.names)

    hidden = None if latent is None else np.array(
        [latent[r.ivd_id] if r.ivd_id in latent else np.full(len(tasks.names), np.nan) for r in rows],
        dtype=np.float64).reshape(len(rows), len(tasks.names))
    per_task, aggregate = _metrics(tasks, grades, predicted, predictions, hidden)
    result = {"method": predictor.method.name, "run": str(run), "tta": bool(tta),
              "views": int(predictor.view_flipped.numel()) if tta else 1, "split": "test",
              "sequences": list(sequences), "unit": test.selection.unit, "volumes": int(len(rows)),
              "skipped_discs": test.selection.skipped, "rows": test.selection.to_dict(),
              "aggregate": aggregate, "tasks": per_task,
              "thresholds": {n: [float(v) for v in tau] for n, tau in zip(tasks.names, thresholds)},
              "grading": "calibrated thresholds" if predictor.method.ranking else "classifier",
              "score_scale": predictor.scale,
              "severity_map": "identity" if all(m.is_identity for m in maps) else "calibrated"}
    if rsna_metric.applies(tasks.names, tasks.num_grades):  # an RSNA 2024 dataset: the competition's score too
        result["rsna_2024"] = rsna_score(rows, tasks.names, grades, predictions)
    flags = borderline(predictions.scores, predictions.std, thresholds)
    atomic_write_text(out / "predictions.csv", predictions_csv(rows, tasks.names, grades, predictions, predicted, flags,
                                                                severity))
    write_outcome(out / OUTCOME_FILE, bootstrap.Outcome(
        ids=np.array([f"{r.ivd_id}/{r.sequence}" for r in rows], dtype=str), grades=grades, predicted=predicted,
        scores=predictions.scores, probs=list(predictions.probs), latent=hidden))
    result["seconds"] = round(time.perf_counter() - started, 2)
    atomic_write_text(out / "metrics.json", json.dumps(json_safe(result), indent=2) + "\n")
    if report:
        from .report import write_report

        write_report(out, result, run=run, dataset=test, predictions=predictions, grades=grades,
                     predicted=predicted, thresholds=thresholds, tasks=tasks, scale=predictor.scale,
                     severity=severity, config=predictor.config)
    return result


def _thresholds(run: pathlib.Path, predictor, tta: bool, sequences, progress: bool) -> list:
    """Per task, the thresholds that grade the scores: a ranking method's calibrated
    ones (calibrated again unless RUN/thresholds.json matches ``tta`` and
    ``sequences``), a classifier's fixed grade boundaries."""
    tasks = predictor.tasks
    if predictor.method.ranking:
        saved = calibrate_lib.load_thresholds(run, tasks.names)
        if saved is None or saved["tta"] != tta or saved.get("sequences") != list(sequences):
            if summaries(progress):
                print(f"calibrating thresholds on the validation split ({'with' if tta else 'without'} TTA, "
                      f"{' and '.join(sequences)} volumes)", flush=True)
            calibrate_lib.calibrate(run, tta=tta, predictor=predictor, progress=progress, sequences=sequences)
            saved = calibrate_lib.load_thresholds(run, tasks.names)
        return saved["arrays"]
    # A classifier: the grade boundaries of the expected-grade score, for the borderline flag and the plots.
    return [metrics_lib.fixed_thresholds(k, predictor.scale) for k in tasks.num_grades]


def _metrics(tasks, grades, predicted, predictions, hidden) -> tuple[dict, dict]:
    """(per-task metrics, their aggregate over tasks), with the Spearman correlation
    of the scores and the hidden severity where the dataset has latent.csv
    (``hidden``, else None)."""
    per_task = {}
    for t, (name, K) in enumerate(zip(tasks.names, tasks.num_grades)):
        keep = grades[:, t] >= 0
        m = metrics_lib.task_metrics(grades[keep, t], predicted[keep, t], predictions.scores[keep, t],
                                     predictions.probs[t][keep], K)
        if hidden is not None:
            ok = keep & np.isfinite(hidden[:, t])
            m["latent_spearman"] = metrics_lib.latent_spearman(predictions.scores[ok, t], hidden[ok, t],
                                                               grades[ok, t])
        per_task[name] = m
    aggregate = metrics_lib.aggregate(per_task)
    if hidden is not None:
        aggregate["latent_spearman"] = metrics_lib.aggregate(
            {n: {"v": m["latent_spearman"]["overall"]} for n, m in per_task.items()}, names=("v",))["v"]
        within = [v for m in per_task.values() for k, v in m["latent_spearman"].items()
                  if k != "overall" and math.isfinite(v)]
        aggregate["latent_spearman_within_grade"] = {"mean": float(np.mean(within)) if within else float("nan"),
                                                     "std": float(np.std(within)) if within else float("nan"),
                                                     "tasks": len(per_task)}
    return per_task, aggregate


def default_out(run: str | pathlib.Path, tta: bool) -> pathlib.Path:
    """Where ``evaluate`` writes without ``out``: RUN/eval, or RUN/eval-no-tta."""
    return pathlib.Path(run) / ("eval" if tta else "eval-no-tta")


def write_outcome(path: pathlib.Path, outcome: bootstrap.Outcome) -> None:
    """The per-disc arrays of an evaluation (``outcome.npz``), read back by
    ``bootstrap.load_outcome`` for the paired comparisons of ``spinerank compare``."""
    from .checkpoint import atomic_write

    arrays = bootstrap.outcome_arrays(outcome)
    atomic_write(path, lambda f: np.savez(f, **arrays), durable=False)


def rsna_score(rows, task_names, grades, predictions: Predictions) -> dict:
    """The RSNA 2024 competition metric of the evaluated rows (their true grades
    after masking, their class probabilities); see rsna_metric."""
    column = {name: t for t, name in enumerate(task_names)}
    return rsna_metric.competition_score(
        [r.subject_id for r in rows], [r.level for r in rows],
        {name: grades[:, column[name]] for name in rsna_metric.TASK_NAMES},
        {name: predictions.probs[column[name]] for name in rsna_metric.TASK_NAMES})


def predictions_csv(rows, task_names, grades, predictions: Predictions, predicted, flags, severity) -> str:
    """One line per scored volume: its ids, then per task the true grade (empty if
    missing), raw score, severity (the calibrated map of the score, 0–S),
    predicted grade, TTA std of the raw score and borderline flag. Columns
    ``<task>_true, <task>_score, <task>_severity, <task>_grade, <task>_std,
    <task>_borderline``; scores and severities to 6 decimals (the grade column is
    computed before rounding)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["ivd_id", "subject_id", "level", "sequence"]
    for name in task_names:
        header += [f"{name}_true", f"{name}_score", f"{name}_severity", f"{name}_grade", f"{name}_std",
                   f"{name}_borderline"]
    writer.writerow(header)
    for i, row in enumerate(rows):
        line = [row.ivd_id, row.subject_id, row.level, row.sequence]
        for t in range(len(task_names)):
            line += ["" if grades is None or grades[i, t] < 0 else int(grades[i, t]),
                     f"{predictions.scores[i, t]:.6f}", f"{severity[i, t]:.6f}", int(predicted[i, t]),
                     f"{predictions.std[i, t]:.6f}", int(flags[i, t])]
        writer.writerow(line)
    return buffer.getvalue()
