"""A trained model applied to new volumes (``spinerank predict``).

Inputs are NIfTI (``.nii``, ``.nii.gz``) or NumPy (``.npy``) volumes of one disc,
(H, W, D) like the dataset's, or folders searched for them. Each volume is fitted
to the model's volume shape and scored (with TTA if asked). The CSV gives per
task the raw score, its severity (the map to [0, S] of the run's calibrated
thresholds in thresholds.json, ``spinerank.severity``; the identity for classifiers and
uncalibrated runs), the grade, the TTA std of the score and a borderline flag.

Bad inputs are reported on stderr by name and skipped; the others are still
predicted:

- a path that does not exist, or a file that cannot be read (not a volume, not
  3-D, not real numbers, NaN or infinite values);
- a volume below the floor: along some axis fewer than a quarter of the voxels
  the model sees (``MIN_INPUT_FRACTION`` of its ``input_shape``; empty axes
  included). Most of what the model would see is zero padding: its scores would
  mean nothing.

A volume smaller than the model's ``input_shape`` along some axis (but above the
floor) is predicted, flagged ``small_input`` = 1 in the CSV, with a warning on
stderr: part of the model's view is zero padding, so treat its grades with care.

Exit status of ``spinerank predict``: 0 when every input was predicted,
``EXIT_SKIPPED`` (3) when some were skipped (the CSV holds the others), 2 when
none could be predicted or on any other error.
"""
from __future__ import annotations

import csv
import io
import math
import pathlib
import sys

import numpy as np
import torch
from .progress import progress_bar

from . import calibrate as calibrate_lib
from .data import fit_to_shape, load_volume
from .evaluate import borderline
from .inference import Predictor
from .metrics import fixed_thresholds
from .severity import maps_for, severities

SUFFIXES = (".nii.gz", ".nii", ".npy")
#: A volume is refused when some axis has fewer voxels than this fraction of the model's input_shape.
MIN_INPUT_FRACTION = 0.25
#: Exit status of ``spinerank predict`` when some inputs were skipped but the CSV was written.
EXIT_SKIPPED = 3


def _is_volume(path: pathlib.Path) -> bool:
    return path.name.endswith(SUFFIXES)


def find_volumes(inputs) -> tuple[list[pathlib.Path], list[tuple[str, str]]]:
    """The volume files among ``inputs`` (files, or folders searched recursively,
    sorted per folder), and the inputs that do not exist as (path, reason)."""
    found, missing = [], []
    for item in inputs:
        path = pathlib.Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and _is_volume(p))
        elif path.exists():
            found.append(path)
        else:
            missing.append((str(path), f"{path} does not exist"))
    if not found and not missing:
        raise ValueError(f"no .nii, .nii.gz or .npy volumes in {', '.join(map(str, inputs))}")
    return found, missing


def input_size_problem(shape_dhw, input_shape) -> tuple[bool, str | None]:
    """(small, refusal) for a volume of ``shape_dhw`` (D, H, W) and the model's
    ``input_shape``: small when some axis is shorter than the model's input,
    refused (a reason) when some axis is below the floor."""
    floor = [max(1, math.ceil(i * MIN_INPUT_FRACTION)) for i in input_shape]
    shown = f"(D, H, W) {tuple(shape_dhw)}, the model's input {tuple(input_shape)}"
    if any(s < f for s, f in zip(shape_dhw, floor)):
        return True, f"too small to predict: {shown}; the floor is {tuple(floor)} (a quarter of the input per axis)"
    return any(s < i for s, i in zip(shape_dhw, input_shape)), None


def _thresholds(predictor: Predictor, tta: bool) -> list:
    """The run's calibrated thresholds (ranking methods), else the fixed ones, with a warning where it matters."""
    tasks = predictor.tasks
    run = predictor.checkpoint.parent
    fixed = [fixed_thresholds(k, predictor.scale) for k in tasks.num_grades]
    if not predictor.method.ranking:
        return fixed
    saved = calibrate_lib.load_thresholds(run, tasks.names)
    if saved is None:
        print(f"spinerank: warning: {run} has no thresholds.json (spinerank calibrate --run {run}); "
              "grading with the fixed thresholds (c + 0.5) S / (K - 1), severity = score", file=sys.stderr)
        return fixed
    if saved["tta"] != tta:
        print(f"spinerank: warning: the thresholds were calibrated {'with' if saved['tta'] else 'without'} "
              f"TTA but these scores are {'with' if tta else 'without'} it", file=sys.stderr)
    return saved["arrays"]


def _volume_items(files):
    """(name, {}, (H, W, D) array or the ValueError it raised) of every volume file."""
    for path in files:
        try:
            yield str(path), {}, load_volume(path)  # its errors name the file
        except ValueError as exc:
            yield str(path), {}, exc


def predict(checkpoint, inputs, out, tta: bool = False, device: str = "cpu", batch_size: int = 16,
            progress: bool = True, mask=None, disc_points=None, dicom=None) -> dict:
    """Writes ``out`` (CSV: file, small_input, then per task score, severity,
    grade, TTA std, borderline: ``<task>_score``, ``<task>_severity``, ...);
    returns {"predicted": n, "skipped": [(file, reason), ...],
    "small": [file, ...]}. Every skipped or small input is also reported on stderr.

    With ``mask`` or ``disc_points`` the one input (or the DICOM series folder
    ``dicom``) is a whole series: every disc
    is cut out as the run's training crops were (``whole_series``) and predicted; the
    CSV then also says which disc (``disc``, ``level``), where (``centre_r``,
    ``centre_a``, ``centre_s``: its centre in the scan's RAS mm) and how much of
    its crop lies inside the scan (``in_field``)."""
    predictor = Predictor(checkpoint, device=device)
    tasks = predictor.tasks
    thresholds = _thresholds(predictor, tta)
    maps = maps_for(thresholds, tasks.num_grades, predictor.scale)  # the identity for the fixed thresholds
    skipped: list[tuple[str, str]] = []
    if mask is not None or disc_points is not None or dicom is not None:
        from . import whole_series

        items = whole_series.disc_items(predictor, inputs, mask=mask, disc_points=disc_points, dicom_folder=dicom)
        extra = list(whole_series.COLUMNS)
        total = None
    else:
        files, skipped = find_volumes(inputs)
        for _, reason in skipped:
            print(f"spinerank: skipped: {reason}", file=sys.stderr)
        items = _volume_items(files)
        extra = []
        total = len(files)
    shape = tuple(predictor.config.volume_shape)
    input_shape = tuple(predictor.config.input_shape)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", *extra, "small_input"]
                    + [f"{n}_{c}" for n in tasks.names for c in ("score", "severity", "grade", "std", "borderline")])
    small = []
    predicted_count = 0
    bar = progress_bar(total=total, desc="predicting", unit="volume", disable=not progress)
    items = iter(items)
    while True:
        batch, names, fields, flagged = _next_batch(items, bar, shape, input_shape, extra, batch_size, skipped,
                                                    small)
        if not batch:
            break
        predictions = predictor(torch.stack(batch), tta)
        grades = predictor.grades(predictions, thresholds if predictor.method.ranking else None)
        flags = borderline(predictions.scores, predictions.std, thresholds)
        severity = severities(predictions.scores, maps)
        for i, name in enumerate(names):
            line = [name, *fields[i], int(flagged[i])]
            for t in range(len(tasks)):
                line += [f"{predictions.scores[i, t]:.6f}", f"{severity[i, t]:.6f}", int(grades[i, t]),
                         f"{predictions.std[i, t]:.6f}", int(flags[i, t])]
            writer.writerow(line)
        predicted_count += len(names)
    bar.close()
    from .checkpoint import atomic_write_text

    atomic_write_text(out, buffer.getvalue())
    return {"predicted": predicted_count, "skipped": skipped, "small": small}


def _next_batch(items, bar, shape, input_shape, extra, batch_size, skipped, small):
    """Up to ``batch_size`` volumes from the iterator ``items``, fitted to ``shape``:
    (volumes, names, extra fields, small flags). A volume that cannot be read or is
    far too small goes to ``skipped``, one smaller than the input to ``small``; each
    is reported on stderr."""
    batch, names, fields, flagged = [], [], [], []
    for name, info, array in items:
        bar.update()
        try:
            if isinstance(array, Exception):
                raise array
            volume = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))  # (D, H, W)
            is_small, refusal = input_size_problem(volume.shape, input_shape)
            if refusal:
                raise ValueError(f"volume {name} (H, W, D) {array.shape} is {refusal}")
        except ValueError as exc:
            skipped.append((name, str(exc)))
            print(f"spinerank: skipped: {exc}", file=sys.stderr)
            continue
        if is_small:
            small.append(name)
            print(f"spinerank: warning: volume {name} is smaller than the model's input: (D, H, W) "
                  f"{tuple(volume.shape)} < {input_shape} along some axis; predicted on zero padding, "
                  "flagged small_input in the CSV", file=sys.stderr)
        batch.append(fit_to_shape(volume, shape)[None])
        names.append(name)
        fields.append([info.get(c, "") for c in extra])
        flagged.append(is_small)
        if len(batch) == batch_size:
            break
    return batch, names, fields, flagged
