"""Which dataset a run was trained on: ``RUN/dataset.json``.

A run records its dataset folder (absolute) and two fingerprints: one of the
labels as read (ids, levels, sequences, centres, grades of every row, in the
run's task table) and one of the subjects' split assignment. Resuming,
calibrating and evaluating check the dataset they are given (the recorded
folder, or ``--data`` for a dataset that moved) against them, so a run is never
continued or scored on other labels or other splits without a word.

The fingerprints hash the parsed rows, not the file's bytes: re-saving
labels.csv with another line ending, a BOM or reordered rows changes nothing.
"""
from __future__ import annotations

import hashlib
import json
import pathlib

from .checkpoint import atomic_write_text

RECORD_FILE = "dataset.json"


def _digest(items) -> str:
    h = hashlib.sha256()
    for item in sorted(items):
        h.update(json.dumps(item).encode())
        h.update(b"\n")
    return h.hexdigest()


def dataset_crop(data_dir) -> dict | None:
    """The crop geometry an importer recorded in the dataset's own ``dataset.json``
    (``importers``), or None (a synthetic or hand-made dataset)."""
    try:
        record = json.loads((pathlib.Path(data_dir) / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    crop = record.get("crop") if isinstance(record, dict) else None
    return crop if isinstance(crop, dict) else None


def fingerprint(data_dir, rows, splits: dict[str, str]) -> dict:
    """The record of a dataset as a run sees it (``rows``: data.VolumeRow), with
    the imported crop geometry if any: ``spinerank predict`` cuts whole series
    the way the training crops were cut."""
    labels = [[r.ivd_id, r.subject_id, r.level, r.sequence, r.centre, list(r.grades)] for r in rows]
    return {"data": str(pathlib.Path(data_dir).resolve()), "volumes": len(rows),
            "subjects": len(splits), "labels_sha256": _digest(labels),
            "splits_sha256": _digest([[s, split] for s, split in splits.items()]),
            "crop": dataset_crop(data_dir)}


def write(run, record: dict) -> None:
    atomic_write_text(pathlib.Path(run) / RECORD_FILE, json.dumps(record, indent=2) + "\n")


def check(run, record: dict) -> None:
    """Raises ValueError when ``record`` (the dataset given now) is not the one the
    run recorded. Runs from before the record was kept are not checked."""
    path = pathlib.Path(run) / RECORD_FILE
    if not path.exists():
        return
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read: {exc}") from exc
    if not isinstance(saved, dict):
        raise ValueError(f"{path} is not a dataset record (a JSON object); it holds a {type(saved).__name__}")
    where = f"{record['data']} is not the dataset run {run} was trained on ({saved.get('data')})"
    if saved.get("labels_sha256") != record["labels_sha256"]:
        raise ValueError(f"{where}: its labels differ ({record['volumes']} volumes now, "
                         f"{saved.get('volumes')} recorded). Point --data at the dataset of the run")
    if saved.get("splits_sha256") != record["splits_sha256"]:
        raise ValueError(f"{where}: its train/val/test split of the subjects differs (splits.csv). "
                         "Restore the run's splits.csv in the dataset folder")


def data_folder(recorded: str, given: str | None) -> str:
    """The dataset folder to use: ``given`` (--data) if any, else the recorded one,
    which must still exist."""
    if given is not None:
        folder = pathlib.Path(given)
        if not (folder / "labels.csv").exists():
            raise FileNotFoundError(f"--data {given}: {folder / 'labels.csv'} does not exist")
        return str(folder.resolve())
    if not (pathlib.Path(recorded) / "labels.csv").exists():
        raise FileNotFoundError(f"the run's dataset {recorded} (labels.csv) is not there any more; "
                                "if it moved, give its new folder with --data")
    return recorded
