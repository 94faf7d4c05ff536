"""A trained model applied to new volumes (``spinerank predict``).

Inputs are NIfTI (``.nii``, ``.nii.gz``) or NumPy (``.npy``) volumes of one disc,
(H, W, D) like the dataset's, or folders searched for them. Each volume is fitted
to the model's volume shape and scored (with TTA if asked). A file that cannot
be read is reported by name and skipped; the others are still predicted.
"""
from __future__ import annotations

import csv
import io
import pathlib
import sys

import numpy as np
import torch
from tqdm.auto import tqdm

from . import calibrate as calibrate_lib
from .data import fit_to_shape, load_volume
from .evaluate import borderline
from .inference import Predictor
from .metrics import fixed_thresholds

SUFFIXES = (".nii.gz", ".nii", ".npy")


def _is_volume(path: pathlib.Path) -> bool:
    return path.name.endswith(SUFFIXES)


def find_volumes(inputs) -> list[pathlib.Path]:
    """The volume files among ``inputs`` (files, or folders searched recursively), sorted per folder."""
    found = []
    for item in inputs:
        path = pathlib.Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and _is_volume(p))
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    if not found:
        raise ValueError(f"no .nii, .nii.gz or .npy volumes in {', '.join(map(str, inputs))}")
    return found


def predict(checkpoint, inputs, out, tta: bool = False, device: str = "cpu", batch_size: int = 16,
            progress: bool = True) -> dict:
    """Writes ``out`` (CSV: file, then per task score, grade, TTA std, borderline);
    returns {"predicted": n, "skipped": [(file, reason), ...]}."""
    predictor = Predictor(checkpoint, device=device)
    tasks = predictor.tasks
    run = predictor.checkpoint.parent
    if predictor.method.ranking:
        saved = calibrate_lib.load_thresholds(run, tasks.names)
        if saved is None:
            print(f"spinerank: warning: {run} has no thresholds.json (spinerank calibrate --run {run}); "
                  "grading with the fixed thresholds (c + 0.5) S / (K - 1)", file=sys.stderr)
            thresholds = [fixed_thresholds(k, predictor.scale) for k in tasks.num_grades]
        else:
            if saved["tta"] != tta:
                print(f"spinerank: warning: the thresholds were calibrated {'with' if saved['tta'] else 'without'} "
                      f"TTA but these scores are {'with' if tta else 'without'} it", file=sys.stderr)
            thresholds = saved["arrays"]
    else:
        thresholds = [fixed_thresholds(k, predictor.scale) for k in tasks.num_grades]

    files = find_volumes(inputs)
    shape = tuple(predictor.config.volume_shape)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file"] + [f"{n}_{c}" for n in tasks.names for c in ("score", "grade", "std", "borderline")])
    skipped = []
    predicted_count = 0
    bar = tqdm(total=len(files), desc="predicting", disable=not progress)
    for start in range(0, len(files), batch_size):
        batch, names = [], []
        for path in files[start:start + batch_size]:
            try:
                array = load_volume(path)  # its errors name the file
            except ValueError as exc:
                skipped.append((str(path), str(exc)))
                print(f"spinerank: skipped: {exc}", file=sys.stderr)
                continue
            volume = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
            batch.append(fit_to_shape(volume, shape)[None])
            names.append(path)
        bar.update(len(files[start:start + batch_size]))
        if not batch:
            continue
        predictions = predictor(torch.stack(batch), tta)
        grades = predictor.grades(predictions, thresholds if predictor.method.ranking else None)
        flags = borderline(predictions.scores, predictions.std, thresholds)
        for i, path in enumerate(names):
            line = [str(path)]
            for t in range(len(tasks)):
                line += [f"{predictions.scores[i, t]:.4f}", int(grades[i, t]), f"{predictions.std[i, t]:.4f}",
                         int(flags[i, t])]
            writer.writerow(line)
        predicted_count += len(names)
    bar.close()
    from .checkpoint import atomic_write_text

    atomic_write_text(out, buffer.getvalue())
    return {"predicted": predicted_count, "skipped": skipped}
