"""Thresholds of a trained ranking model, fitted on its validation scores (SPEC §8).

The validation scores are computed the way the test scores will be (with TTA or
without), so the thresholds match what they are applied to. The result is
``RUN/thresholds.json``; ``spinerank evaluate`` and ``spinerank predict`` read it.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import numpy as np

from . import provenance
from . import thresholds as thresholds_lib
from .checkpoint import atomic_write_text
from .data import DiscDataset, load_or_make_splits, preflight, read_labels, split_rows
from .inference import Predictor
from .metrics import fixed_thresholds

THRESHOLDS_FILE = "thresholds.json"


def run_predictor(run: pathlib.Path, device: str, data: str | None = None) -> Predictor:
    """The run's best model, pointed at its dataset: ``data`` (a dataset that
    moved) or the folder the run recorded."""
    predictor = Predictor(run / "best.pt", device=device)
    c = predictor.config
    predictor.config = dataclasses.replace(c, data=provenance.data_folder(c.data, data))
    return predictor


def split_dataset(predictor: Predictor, split: str, progress: bool = False) -> DiscDataset:
    """One split of the run's dataset, one item per volume. The dataset is checked
    against the one the run was trained on (RUN/dataset.json), and the split's
    volumes are all checked first (``data.preflight``), so a bad one stops the
    command before any scoring."""
    c = predictor.config
    rows = read_labels(c.data, predictor.tasks)
    splits = load_or_make_splits(c.data, rows, c.split_seed)
    provenance.check(predictor.checkpoint.parent, provenance.fingerprint(c.data, rows, splits))
    chosen = split_rows(rows, splits)[split]
    preflight(c.data, chosen, progress=progress, desc=f"checking {split} volumes")
    return DiscDataset(c.data, chosen, predictor.tasks, c.volume_shape, mode="eval")


def calibrate(run: str | pathlib.Path, tta: bool = True, method: str = "grid", objective: str = "composite",
              device: str = "cpu", progress: bool = True, predictor: Predictor | None = None,
              data: str | None = None) -> dict:
    """Fits and writes RUN/thresholds.json; returns its content. ``data``: the
    run's dataset where it is now, if it moved."""
    run = pathlib.Path(run)
    started = time.perf_counter()
    predictor = predictor or run_predictor(run, device, data)
    if not predictor.method.ranking:
        raise ValueError(f"{run} was trained with --method {predictor.method.name}, which grades with its "
                         "classifier; thresholds are for the ranking methods (ranknet, deeprank, spinerank)")
    if method not in thresholds_lib.METHODS:
        raise ValueError(f"threshold method must be one of {thresholds_lib.METHODS}, got {method!r}")
    if objective not in thresholds_lib.OBJECTIVES:
        raise ValueError(f"objective must be one of {thresholds_lib.OBJECTIVES}, got {objective!r}")
    val = split_dataset(predictor, "val", progress=progress)
    predictions, grades = predictor.predict_dataset(val, tta, progress=progress, desc="validation scores")
    tasks, fits = {}, {}
    for t, (name, K) in enumerate(zip(predictor.tasks.names, predictor.tasks.num_grades)):
        keep = grades[:, t] >= 0
        if keep.sum() == 0:  # nothing to fit on: the fixed thresholds of training
            tasks[name] = fixed_thresholds(K, predictor.scale).tolist()
            fits[name] = {"n": 0, "fitted": False}
            continue
        fitted = thresholds_lib.fit_thresholds(predictions.scores[keep, t], grades[keep, t], K,
                                               objective=objective, method=method)
        tasks[name] = [float(v) for v in fitted]
        value = thresholds_lib.objective_value(predictions.scores[keep, t], grades[keep, t], K, fitted, objective)
        fits[name] = {"n": int(keep.sum()), "fitted": True, "objective": value}
    result = {"method": method, "objective": objective, "tta": bool(tta), "checkpoint": predictor.checkpoint.name,
              "thresholds": tasks, "validation": fits, "seconds": round(time.perf_counter() - started, 2)}
    atomic_write_text(run / THRESHOLDS_FILE, json.dumps(result, indent=2) + "\n")
    return result


def load_thresholds(run: str | pathlib.Path, task_names: list[str]) -> dict | None:
    """RUN/thresholds.json with the thresholds as arrays in task order, or None."""
    path = pathlib.Path(run) / THRESHOLDS_FILE
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    missing = [n for n in task_names if n not in saved["thresholds"]]
    if missing:
        raise ValueError(f"{path} has no thresholds for task(s) {', '.join(missing)}; run spinerank calibrate again")
    saved["arrays"] = [np.asarray(saved["thresholds"][n], dtype=np.float64) for n in task_names]
    return saved
