"""Patient-level splits: made once (stratified by centre and grade) and kept in the
dataset folder's splits.csv."""
from __future__ import annotations

import csv
import io
import pathlib
from collections import defaultdict

import numpy as np

from ..checkpoint import atomic_write_text
from .labels import VolumeRow

SPLITS = ("train", "val", "test")


def make_splits(rows: list[VolumeRow], seed: int, first_task: int = 0) -> dict[str, str]:
    """Patient-level 80/10/10 splits, stratified by centre and grade.

    Subjects are ordered by stratum (centre, their worst grade of the first task)
    and randomly within it, then dealt train x8, val, test in turn (systematic
    sampling from a random start): every stratum contributes to every split in
    proportion, and no subject is in two splits.
    """
    worst: dict[str, int] = defaultdict(lambda: -1)
    centre: dict[str, str] = {}
    for row in rows:
        worst[row.subject_id] = max(worst[row.subject_id], row.grades[first_task])
        centre.setdefault(row.subject_id, row.centre)
    rng = np.random.default_rng(seed)
    subjects = sorted(centre)
    tiebreak = rng.permutation(len(subjects))
    order = sorted(range(len(subjects)), key=lambda i: (centre[subjects[i]], worst[subjects[i]], tiebreak[i]))
    pattern = ["train"] * 8 + ["val", "test"]
    start = int(rng.integers(len(pattern)))
    return {subjects[i]: pattern[(start + k) % len(pattern)] for k, i in enumerate(order)}


def load_or_make_splits(data_dir: str | pathlib.Path, rows: list[VolumeRow], seed: int) -> dict[str, str]:
    """splits.csv of the dataset folder if present (checked), else new splits written there."""
    path = pathlib.Path(data_dir) / "splits.csv"
    subjects = {row.subject_id for row in rows}
    if path.exists():
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not {"subject_id", "split"} <= set(reader.fieldnames or []):
                raise ValueError(f"{path}: needs columns subject_id and split")
            splits = {}
            for line, record in enumerate(reader, start=2):
                if record["split"] not in SPLITS:
                    raise ValueError(f"{path}, line {line}: split {record['split']!r} is not one of {SPLITS}")
                splits[record["subject_id"]] = record["split"]
        unknown = sorted(subjects - set(splits))
        if unknown:
            raise ValueError(f"{path} has no split for subject(s) {', '.join(unknown[:5])}"
                             f"{' ...' if len(unknown) > 5 else ''}; delete it to make new splits")
        splits = {s: splits[s] for s in subjects}
    else:
        splits = make_splits(rows, seed)
        buffer = io.StringIO()  # quoted where needed: a subject id may hold a comma
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["subject_id", "split"])
        writer.writerows([s, splits[s]] for s in sorted(splits))
        atomic_write_text(path, buffer.getvalue())
    for name in SPLITS:
        if name not in splits.values():
            raise ValueError(f"the {name} split is empty ({len(subjects)} subjects in {path}); "
                             "an 80/10/10 split needs at least 10 subjects")
    return splits


def split_rows(rows: list[VolumeRow], splits: dict[str, str]) -> dict[str, list[VolumeRow]]:
    out: dict[str, list[VolumeRow]] = {name: [] for name in SPLITS}
    for row in rows:
        out[splits[row.subject_id]].append(row)
    return out
