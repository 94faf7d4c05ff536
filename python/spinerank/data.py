"""Data (SPEC §10): labels.csv, volumes, patient-level splits, the disc dataset.

A dataset folder holds ``labels.csv`` (one row per volume: ``ivd_id, subject_id,
level, sequence, centre``, then one column per task, empty = missing) and
``volumes/<ivd_id>_<sequence>.npy`` or ``.nii.gz``, arrays (H, W, D) = (rows,
columns, sagittal slices). Every problem stops with a message naming the file,
the row or the column: a volume is never silently replaced by zeros.
"""
from __future__ import annotations

import csv
import dataclasses
import pathlib
from collections import defaultdict

import numpy as np
import torch

from .checkpoint import atomic_write_text
from .tasks import TaskTable

ID_COLUMNS = ("ivd_id", "subject_id", "level", "sequence", "centre")
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class VolumeRow:
    """One row of labels.csv: a volume and its grades (-1 = missing)."""

    ivd_id: str
    subject_id: str
    level: str
    sequence: str
    centre: str
    grades: tuple[int, ...]
    line: int  # in labels.csv, for messages


def read_labels(data_dir: str | pathlib.Path, tasks: TaskTable) -> list[VolumeRow]:
    path = pathlib.Path(data_dir) / "labels.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: a dataset folder needs labels.csv (SPEC §10)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in (*ID_COLUMNS, *tasks.names) if c not in header]
        if missing:
            raise ValueError(f"{path}: missing required column(s) {', '.join(missing)} "
                             f"(has {', '.join(header) or 'no header'})")
        rows = []
        for line, record in enumerate(reader, start=2):
            grades = []
            for task in tasks.tasks:
                cell = (record[task.name] or "").strip()
                if cell == "":
                    grades.append(-1)
                    continue
                try:
                    grade = int(float(cell)) if float(cell).is_integer() else None
                except ValueError:
                    grade = None
                if grade is None:
                    raise ValueError(f"{path}, line {line}, column {task.name}: grade {cell!r} is not an integer")
                if grade >= task.num_grades:
                    raise ValueError(f"{path}, line {line}, column {task.name}: grade {grade} is outside "
                                     f"0..{task.num_grades - 1} (empty or negative = missing)")
                grades.append(grade if grade >= 0 else -1)
            ids = {c: (record[c] or "").strip() for c in ID_COLUMNS}
            for c in ("ivd_id", "subject_id", "sequence"):
                if not ids[c]:
                    raise ValueError(f"{path}, line {line}: column {c} is empty")
            rows.append(VolumeRow(**ids, grades=tuple(grades), line=line))
    if not rows:
        raise ValueError(f"{path} has no rows")
    return rows


def volume_path(data_dir: str | pathlib.Path, row: VolumeRow) -> pathlib.Path:
    """volumes/<ivd_id>_<sequence>.npy or .nii.gz (.npy first); raises naming both if neither exists."""
    base = pathlib.Path(data_dir) / "volumes" / f"{row.ivd_id}_{row.sequence}"
    for suffix in (".npy", ".nii.gz", ".nii"):
        path = base.with_name(base.name + suffix)
        if path.exists():
            return path
    raise FileNotFoundError(f"volume {base}.npy (or .nii.gz) of labels.csv line {row.line} does not exist")


def load_volume(path: str | pathlib.Path) -> np.ndarray:
    """A float32 (H, W, D) array from .npy or NIfTI; raises naming the file if it is unusable."""
    path = pathlib.Path(path)
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            import nibabel

            array = np.asarray(nibabel.load(str(path)).get_fdata(dtype=np.float32))
    except Exception as exc:  # numpy and nibabel raise many kinds
        raise ValueError(f"volume {path} cannot be read: {exc}") from exc
    if array.ndim != 3:
        raise ValueError(f"volume {path} has shape {array.shape}; expected 3 dimensions (H, W, D)")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ValueError(f"volume {path} contains NaN or infinite values")
    return array


def fit_to_shape(volume: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Centre crop or zero-pad a (D, H, W) tensor to ``shape``."""
    out = volume.new_zeros(shape)
    src, dst = [], []
    for have, want in zip(volume.shape, shape):
        if have >= want:
            start = (have - want) // 2
            src.append(slice(start, start + want))
            dst.append(slice(0, want))
        else:
            start = (want - have) // 2
            src.append(slice(0, have))
            dst.append(slice(start, start + have))
    out[tuple(dst)] = volume[tuple(src)]
    return out


# ---------------------------------------------------------------------------
# Splits


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
        with open(path, newline="") as f:
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
        lines = ["subject_id,split"] + [f"{s},{splits[s]}" for s in sorted(splits)]
        atomic_write_text(path, "\n".join(lines) + "\n")
    for name in SPLITS:
        if name not in splits.values():
            raise ValueError(f"the {name} split is empty ({len(subjects)} subjects in {path}); "
                             "an 80/10/10 split needs at least 10 subjects")
    return splits


# ---------------------------------------------------------------------------
# The dataset


class DiscDataset(torch.utils.data.Dataset):
    """Discs of one split.

    ``mode="train"``: one item per disc; each access picks one of its sequences at
    random (from ``seed``, the epoch and the index, so runs are reproducible).
    ``mode="eval"``: one item per volume. Task labels not gradable on a sequence
    (the task table's ``masked_for``, e.g. Pfirrmann on T1) are set to -1.
    Items: (volume (1, D, H, W) float32 fitted to ``volume_shape``, grades (T,) int64).
    """

    def __init__(self, data_dir, rows: list[VolumeRow], tasks: TaskTable, volume_shape, *,
                 mode: str = "train", seed: int = 0):
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        if not rows:
            raise ValueError("a dataset needs at least one volume")
        self.data_dir = pathlib.Path(data_dir)
        self.tasks = tasks
        self.volume_shape = tuple(volume_shape)
        self.mode = mode
        self.seed = seed
        self.epoch = 0
        self.paths = {row: volume_path(self.data_dir, row) for row in rows}  # fails fast on a missing file
        if mode == "train":
            by_disc: dict[str, list[VolumeRow]] = defaultdict(list)
            for row in rows:
                by_disc[row.ivd_id].append(row)
            self.items = [sorted(v, key=lambda r: r.sequence) for _, v in sorted(by_disc.items())]
        else:
            self.items = [[row] for row in sorted(rows, key=lambda r: (r.ivd_id, r.sequence))]

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def row(self, index: int) -> VolumeRow:
        """The volume an access returns (for training: this epoch's random pick)."""
        choices = self.items[index]
        if len(choices) == 1:
            return choices[0]
        pick = np.random.default_rng([self.seed, self.epoch, index]).integers(len(choices))
        return choices[int(pick)]

    def grades(self, row: VolumeRow) -> torch.Tensor:
        masked = self.tasks.masked(row.sequence)
        return torch.tensor([-1 if m else g for g, m in zip(row.grades, masked)], dtype=torch.long)

    def __getitem__(self, index: int):
        row = self.row(index)
        array = load_volume(self.paths[row])
        volume = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))  # (D, H, W)
        return fit_to_shape(volume, self.volume_shape)[None], self.grades(row)


def split_rows(rows: list[VolumeRow], splits: dict[str, str]) -> dict[str, list[VolumeRow]]:
    out: dict[str, list[VolumeRow]] = {name: [] for name in SPLITS}
    for row in rows:
        out[splits[row.subject_id]].append(row)
    return out


def class_weights(rows: list[VolumeRow], tasks: TaskTable) -> list[torch.Tensor]:
    """Inverse-frequency weights w_c = N_t / (K_t * N_{t,c}) per task, counted on
    ``rows`` (the training split) after masking; classes never seen get weight 0."""
    weights = []
    for t, task in enumerate(tasks.tasks):
        counts = torch.zeros(task.num_grades)
        for row in rows:
            g = row.grades[t]
            if g >= 0 and row.sequence not in task.masked_for:
                counts[g] += 1
        total = counts.sum()
        weights.append(torch.where(counts > 0, total / (task.num_grades * counts.clamp(min=1)), 0.0))
    return weights
