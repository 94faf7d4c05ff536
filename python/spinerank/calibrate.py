"""Thresholds of a trained ranking model, fitted on its validation scores (SPEC §8).

The validation scores are computed the way the test scores will be (with TTA or
without, on the same sequences), so the thresholds match what they are applied
to. The result is ``RUN/thresholds.json``; ``spinerank evaluate`` and
``spinerank predict`` read it, and map the raw scores through the thresholds to
a severity (``spinerank.severity``: the strictly increasing piecewise-linear
map that sends threshold k to (k - ½) S / (K - 1), so that a severity means the
same on every task and run).

Which volumes are scored (``sequences``, SPEC §9): by default each disc once, on
its T2 volume, as the published code evaluates; a disc without a T2 volume is
skipped and counted. Other sequences on request (``("T1", "T2")``: every volume,
then a row is a volume and a disc with both counts twice).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import numpy as np

from . import methods as methods_lib
from . import provenance
from . import thresholds as thresholds_lib
from .checkpoint import atomic_write_text
from .data import DiscDataset, load_or_make_splits, preflight, read_labels, split_rows, volume_cache
from .inference import Predictor
from .metrics import fixed_thresholds

THRESHOLDS_FILE = "thresholds.json"

#: The sequences scored by default: one row per disc, its T2 volume (as published).
DEFAULT_SEQUENCES = ("T2",)


def normalize_sequences(sequences) -> tuple[str, ...]:
    """The sorted, distinct sequence names of ``sequences`` (a name or names; None: the default)."""
    if sequences is None:
        return DEFAULT_SEQUENCES
    if isinstance(sequences, str):
        sequences = [sequences]
    names = tuple(sorted({str(s).strip() for s in sequences}))
    if not names or "" in names:
        raise ValueError(f"sequences: give one or more sequence names (e.g. T2, or T1 T2), got {sequences!r}")
    return names


@dataclasses.dataclass(frozen=True)
class Selection:
    """The volumes of a split that are scored: those of ``sequences``."""

    sequences: tuple[str, ...]
    rows: int  # volumes scored
    discs: int  # discs of the split
    skipped: int  # discs of the split without a volume of the sequences

    @property
    def unit(self) -> str:
        """What a row, and so ``n``, counts: "discs (T2 volume)" or "volumes (T1, T2)"."""
        if len(self.sequences) == 1:
            return f"discs ({self.sequences[0]} volume)"
        return f"volumes ({', '.join(self.sequences)})"

    def to_dict(self) -> dict:
        return {"sequences": list(self.sequences), "unit": self.unit, "rows": self.rows, "discs": self.discs,
                "skipped_discs": self.skipped}


def run_predictor(run: pathlib.Path, device: str, data: str | None = None) -> Predictor:
    """The run's best model, pointed at its dataset: ``data`` (a dataset that
    moved) or the folder the run recorded."""
    predictor = Predictor(run / "best.pt", device=device)
    c = predictor.config
    predictor.config = dataclasses.replace(c, data=provenance.data_folder(c.data, data))
    return predictor


def split_dataset(predictor: Predictor, split: str, sequences=DEFAULT_SEQUENCES,
                  progress: bool = False) -> DiscDataset:
    """The volumes of ``sequences`` in one split of the run's dataset, one item per
    volume (``dataset.selection`` says what was kept and skipped). The dataset is
    checked against the one the run was trained on (RUN/dataset.json), and the
    kept volumes are all checked first (``data.preflight``), so a bad one stops
    the command before any scoring."""
    c = predictor.config
    sequences = normalize_sequences(sequences)
    rows = read_labels(c.data, predictor.tasks)
    splits = load_or_make_splits(c.data, rows, c.split_seed)
    provenance.check(predictor.checkpoint.parent, provenance.fingerprint(c.data, rows, splits))
    in_split = split_rows(rows, splits)[split]
    present = sorted({r.sequence for r in in_split})
    absent = [s for s in sequences if s not in present]
    if absent:
        raise ValueError(f"the {split} split has no {' or '.join(absent)} volume (its sequences: "
                         f"{', '.join(present)}); choose --sequences among those")
    kept = [r for r in in_split if r.sequence in sequences]
    discs = {r.ivd_id for r in in_split}
    cache = volume_cache(c.data, rows, c.volume_shape, progress=progress)
    preflight(c.data, kept, progress=progress, desc=f"checking {split} volumes", cache=cache)
    dataset = DiscDataset(c.data, kept, predictor.tasks, c.volume_shape, mode="eval", cache=cache)
    dataset.selection = Selection(sequences, len(kept), len(discs), len(discs - {r.ivd_id for r in kept}))
    return dataset


def calibrate(run: str | pathlib.Path, tta: bool = True, method: str = "grid", objective: str = "composite",
              device: str = "cpu", progress: bool = True, predictor: Predictor | None = None,
              data: str | None = None, sequences=DEFAULT_SEQUENCES) -> dict:
    """Fits and writes RUN/thresholds.json; returns its content. ``data``: the
    run's dataset where it is now, if it moved; ``sequences``: the volumes scored
    (default: each disc's T2 volume)."""
    run = pathlib.Path(run)
    started = time.perf_counter()
    predictor = predictor or run_predictor(run, device, data)
    if not predictor.method.ranking:
        raise ValueError(f"{run} was trained with --method {predictor.method.name}, which grades with its "
                         "classifier; thresholds are for the ranking methods "
                         f"({', '.join(methods_lib.ranking_names())})")
    if method not in thresholds_lib.METHODS:
        raise ValueError(f"threshold method must be one of {thresholds_lib.METHODS}, got {method!r}")
    if objective not in thresholds_lib.OBJECTIVES:
        raise ValueError(f"objective must be one of {thresholds_lib.OBJECTIVES}, got {objective!r}")
    val = split_dataset(predictor, "val", sequences, progress=progress)
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
    selection = val.selection
    result = {"method": method, "objective": objective, "tta": bool(tta), "sequences": list(selection.sequences),
              "checkpoint": predictor.checkpoint.name, "thresholds": tasks, "score_scale": predictor.scale,
              "validation": fits,
              "validation_rows": selection.to_dict(), "seconds": round(time.perf_counter() - started, 2)}
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

