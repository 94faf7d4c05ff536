"""Data (SPEC §10): labels.csv, volumes, patient-level splits, the disc dataset.

A dataset folder holds ``labels.csv`` (one row per volume: ``ivd_id, subject_id,
level, sequence, centre``, then one column per task, empty = missing) and
``volumes/<ivd_id>_<sequence>.npy`` or ``.nii.gz``, arrays (H, W, D) = (rows,
columns, sagittal slices). Every problem stops with a message naming the file,
the row or the column: a volume is never silently replaced by zeros.

labels.csv is UTF-8 (a byte-order mark is allowed); one row per (ivd_id,
sequence); a disc under one subject; ids that name files stay inside volumes/
(``read_labels``). ``preflight`` checks every volume a command will read before
it starts (train: train and validation splits; calibrate: validation; evaluate:
test), so that a bad file stops the command at once, listed with all the others,
instead of in the middle of training.
"""
from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import io
import os
import pathlib
from collections import defaultdict

import numpy as np
import torch
from .progress import progress_bar

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


#: Characters an id used in a volume's file name may not hold: path separators
#: (both kinds on every system, so a dataset behaves alike everywhere), ``:``
#: (a drive or stream on Windows) and control characters (NUL among them).
_UNSAFE_ID_CHARS = frozenset('/\\:') | {chr(c) for c in range(32)} | {chr(127)}


def unsafe_id_reason(value: str) -> str | None:
    """Why ``value`` cannot be part of a file name inside ``volumes/``, or None."""
    bad = sorted({ch for ch in value if ch in _UNSAFE_ID_CHARS})
    if bad:
        return f"holds {', '.join(repr(ch) for ch in bad)}, which a file name in volumes/ cannot"
    if ".." in value:
        return "holds '..', which a file name in volumes/ may not"
    return None


def _decode_labels(path: pathlib.Path) -> str:
    """The text of labels.csv: UTF-8, with or without a byte-order mark."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        hint = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ValueError(f"{path} is not UTF-8 text{hint}: byte 0x{data[exc.start]:02x} at line {line}, byte "
                         f"{column} cannot be decoded ({exc.reason}); save it as UTF-8 (with or without a "
                         "byte-order mark), e.g. from a spreadsheet as 'CSV UTF-8'") from None


def read_labels(data_dir: str | pathlib.Path, tasks: TaskTable) -> list[VolumeRow]:
    """The rows of labels.csv, checked: every problem names the file and its line(s).

    The file is UTF-8 (a byte-order mark is allowed). A ``(ivd_id, sequence)`` pair
    appears once; a disc (``ivd_id``) belongs to one subject; ``ivd_id`` and
    ``sequence`` name a file in ``volumes/``, so they hold no path separator,
    ``..``, ``:`` or control character, and no two rows name the same file."""
    path = pathlib.Path(data_dir) / "labels.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: a dataset folder needs labels.csv (SPEC §10)")
    reader = csv.DictReader(io.StringIO(_decode_labels(path), newline=""))
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        raise ValueError(f"{path}, line {reader.line_num}: {exc}") from None
    missing = [c for c in (*ID_COLUMNS, *tasks.names) if c not in header]
    if missing:
        raise ValueError(f"{path}: missing required column(s) {', '.join(missing)} "
                         f"(has {', '.join(header) or 'no header'})")
    rows = []
    seen: dict[tuple[str, str], VolumeRow] = {}  # (ivd_id, sequence) -> its row
    files: dict[str, VolumeRow] = {}  # volume file name (without suffix) -> its row
    subject_of: dict[str, VolumeRow] = {}  # ivd_id -> its first row
    records = iter(reader)
    while True:
        try:
            record = next(records)
        except StopIteration:
            break
        except csv.Error as exc:
            raise ValueError(f"{path}, line {reader.line_num}: {exc}") from None
        line = reader.line_num
        grades = []
        for task in tasks.tasks:
            cell = (record[task.name] or "").strip()
            if cell == "":
                grades.append(-1)
                continue
            try:
                grade = int(float(cell)) if float(cell).is_integer() else None
            except (ValueError, OverflowError):
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
        for c in ("ivd_id", "sequence"):
            reason = unsafe_id_reason(ids[c])
            if reason:
                raise ValueError(f"{path}, line {line}, column {c}: {ids[c]!r} {reason} "
                                 f"(volumes/<ivd_id>_<sequence>.npy must stay inside volumes/)")
        row = VolumeRow(**ids, grades=tuple(grades), line=line)
        key = (row.ivd_id, row.sequence)
        if key in seen:
            first = seen[key]
            same = "the same grades" if first.grades == row.grades else "different grades"
            raise ValueError(f"{path}, lines {first.line} and {line}: ivd_id {row.ivd_id!r}, sequence "
                             f"{row.sequence!r} appears twice (with {same}); keep one row per volume")
        seen[key] = row
        name = f"{row.ivd_id}_{row.sequence}"
        if name in files:
            first = files[name]
            raise ValueError(f"{path}, lines {first.line} and {line}: (ivd_id {first.ivd_id!r}, sequence "
                             f"{first.sequence!r}) and (ivd_id {row.ivd_id!r}, sequence {row.sequence!r}) "
                             f"both name the volume volumes/{name}")
        files[name] = row
        first = subject_of.setdefault(row.ivd_id, row)
        if first.subject_id != row.subject_id:
            raise ValueError(f"{path}, lines {first.line} and {line}: ivd_id {row.ivd_id!r} is under subject "
                             f"{first.subject_id!r} on line {first.line} and subject {row.subject_id!r} on line "
                             f"{line}; a disc belongs to one subject")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} has no rows")
    return rows


def volume_name(row: VolumeRow) -> str:
    """The volume's file name without its suffix: ``<ivd_id>_<sequence>``."""
    return f"{row.ivd_id}_{row.sequence}"


def volume_path(data_dir: str | pathlib.Path, row: VolumeRow) -> pathlib.Path:
    """volumes/<ivd_id>_<sequence>.npy or .nii.gz (.npy first); raises naming both if neither exists.

    The name is always a file directly inside ``volumes/`` (ValueError otherwise,
    whatever the row holds); a symbolic link placed there is followed."""
    volumes = pathlib.Path(data_dir) / "volumes"
    stem = f"{row.ivd_id}_{row.sequence}"
    reason = unsafe_id_reason(stem)
    candidate = os.path.normpath(volumes / stem)
    if reason or os.path.dirname(candidate) != os.path.normpath(volumes) or pathlib.Path(stem).name != stem:
        raise ValueError(f"volume name {stem!r} of labels.csv line {row.line} "
                         f"{reason or 'is not a file name inside volumes/'}")
    base = volumes / stem
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
    if array.dtype.kind not in NUMERIC_KINDS:
        raise ValueError(f"volume {path} has dtype {array.dtype}; expected real numbers (float, int or bool)")
    if 0 in array.shape:
        raise ValueError(f"volume {path} has shape {array.shape}: it is empty")
    with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32's range: inf, reported
        array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ValueError(f"volume {path} contains NaN or infinite values")
    return array


# ---------------------------------------------------------------------------
# Preflight: every volume a command will read, checked before it starts

#: dtype kinds a volume may have: bool, signed and unsigned int, float.
NUMERIC_KINDS = "biuf"
#: Bad files listed one per line in preflight's message; the rest are counted.
PREFLIGHT_LISTED = 20
#: Elements checked for finiteness at a time (bounds preflight's memory).
_CHUNK_ELEMENTS = 2**22


def _npy_header(path: pathlib.Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, offset of the data) from a .npy header, reading nothing else."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:  # 2.0 and 3.0 differ only in the header's length field and text encoding
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        return tuple(shape), dtype, f.tell()


def _check_shape_dtype(shape: tuple[int, ...], dtype: np.dtype) -> str | None:
    if len(shape) != 3:
        return f"shape {shape}: expected 3 dimensions (H, W, D)"
    if dtype.kind not in NUMERIC_KINDS:
        return f"dtype {dtype}: expected real numbers (float, int or bool)"
    if 0 in shape:
        return f"shape {shape}: it is empty"
    return None


def _all_finite(array) -> bool:
    """Whether every value is finite as float32 (what load_volume makes of it), a chunk at a time."""
    if array.dtype.kind != "f":
        return True  # bool and every int are finite as float32
    step = max(1, _CHUNK_ELEMENTS // max(1, int(np.prod(array.shape[1:]))))
    with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32's range becomes inf: reported
        return all(np.isfinite(np.asarray(array[i:i + step]).astype(np.float32, copy=False)).all()
                   for i in range(0, array.shape[0], step))


def check_volume(path: str | pathlib.Path) -> str | None:
    """Why the volume file ``path`` cannot be used, or None if load_volume will read it.

    .npy: the header (shape, dtype), then the file's size against it (a truncated
    file), then every value through a read-only memory map. NIfTI: the header,
    then a full decode: a truncated or damaged .nii.gz shows only when its
    compressed stream is read to the end, so nothing less finds it."""
    path = pathlib.Path(path)
    try:
        if path.suffix == ".npy":
            shape, dtype, offset = _npy_header(path)
            problem = _check_shape_dtype(shape, dtype)
            if problem:
                return problem
            needed = offset + int(np.prod(shape)) * dtype.itemsize
            size = path.stat().st_size
            if size < needed:
                return (f"truncated: its header says {'x'.join(map(str, shape))} {dtype} ({needed} bytes "
                        f"with the header) but the file holds {size} bytes")
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            import nibabel

            image = nibabel.load(str(path))
            problem = _check_shape_dtype(tuple(image.shape), np.dtype(image.get_data_dtype()))
            if problem:
                return problem
            array = image.get_fdata(dtype=np.float32)
        if not _all_finite(array):
            wide = " (as float32)" if array.dtype.itemsize > 4 else ""
            return f"contains NaN or infinite values{wide}"
    except Exception as exc:  # numpy, nibabel, gzip and the OS raise many kinds
        return f"cannot be read: {type(exc).__name__}: {exc}"
    return None


def preflight(data_dir: str | pathlib.Path, rows: list[VolumeRow], *, progress: bool = True,
              workers: int | None = None, desc: str = "checking volumes",
              cache=None) -> dict[VolumeRow, pathlib.Path]:
    """Checks every volume of ``rows`` before a command reads any (``check_volume``):
    it exists inside ``volumes/``, its header is readable, it has 3 non-empty
    dimensions and a real numeric dtype, and all its values are finite.

    Raises one ValueError listing every bad file with its reason (the first
    ``PREFLIGHT_LISTED``, then a count); returns {row: volume path} otherwise.
    Files are checked by ``workers`` threads (default: the CPUs, at most 8;
    reading and gzip decoding release the GIL).

    With the environment variable ``SPINERANK_PREFLIGHT=0`` only the files'
    existence is checked (no reads: for very large datasets on slow storage);
    a bad file then stops the command when it is first read, as before.
    Volumes in ``cache`` (a volume_cache.VolumeCache, valid for the files as they
    are now) were decoded and checked when it was built: only their existence is
    checked again."""
    rows = list(rows)
    contents = os.environ.get("SPINERANK_PREFLIGHT", "1").strip() != "0"
    found: dict[VolumeRow, pathlib.Path] = {}
    problems: list[tuple[int, str]] = []  # (index of the row, message)

    def check(index_row):
        index, row = index_row
        try:
            path = volume_path(data_dir, row)
        except (FileNotFoundError, ValueError) as exc:
            return index, row, None, str(exc)
        cached = cache is not None and volume_name(row) in cache
        reason = check_volume(path) if contents and not cached else None
        return index, row, path, None if reason is None else f"{path} (labels.csv line {row.line}): {reason}"

    workers = workers or min(8, os.cpu_count() or 1)
    bar = progress_bar(total=len(rows), desc=desc, unit="volume", leave=False, disable=not progress)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for index, row, path, problem in pool.map(check, enumerate(rows)):
            bar.update()
            if problem is None:
                found[row] = path
            else:
                problems.append((index, problem))
    bar.close()
    if problems:
        lines = [message for _, message in sorted(problems)]
        shown = "\n  ".join(lines[:PREFLIGHT_LISTED])
        more = f"\n  ... and {len(lines) - PREFLIGHT_LISTED} more" if len(lines) > PREFLIGHT_LISTED else ""
        raise ValueError(f"{len(lines)} of {len(rows)} volume(s) in {pathlib.Path(data_dir) / 'volumes'} "
                         f"cannot be used (nothing was started):\n  {shown}{more}")
    return found


def volume_cache(data_dir, rows: list[VolumeRow], volume_shape, *, progress: bool = True):
    """The decoded-volume cache (volume_cache.py) of ``rows``, all of labels.csv's
    rows (one cache per dataset and shape, shared by every command), built if
    missing or stale; None when turned off. Missing files are left out (preflight
    names them)."""
    from . import volume_cache as cache_lib

    if not cache_lib.enabled():
        return None
    paths = {}
    for row in rows:
        try:
            paths[volume_name(row)] = volume_path(data_dir, row)
        except (FileNotFoundError, ValueError):
            continue
    return cache_lib.open_cache(data_dir, paths, volume_shape, progress=progress)


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


# ---------------------------------------------------------------------------
# The dataset


class DiscDataset(torch.utils.data.Dataset):
    """Discs of one split.

    ``mode="train"``: one item per disc; each access picks one of its sequences at
    random (from ``seed``, the epoch and the index, so runs are reproducible).
    ``mode="eval"``: one item per volume. Task labels not gradable on a sequence
    (the task table's ``masked_for``, e.g. Pfirrmann on T1) are set to -1.
    Items: (volume (1, D, H, W) float32 fitted to ``volume_shape``, grades (T,) int64).

    Batches: ``batch(indices)`` returns a whole batch, (B, 1, D, H, W) and (B, T),
    read from ``cache`` in one gather where the volumes are cached; ``loader``
    makes DataLoaders that call it once per batch (a plain DataLoader over the
    dataset still works item by item).
    An index may be an ``(epoch, index)`` pair (``EpochSampler``): the epoch that
    picks a disc's sequence then travels with it, so persistent DataLoader
    workers pick as the main process would. Batches are the same, bit for bit,
    with and without the cache.
    """

    def __init__(self, data_dir, rows: list[VolumeRow], tasks: TaskTable, volume_shape, *,
                 mode: str = "train", seed: int = 0, cache=None):
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
        self.cache = cache
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

    def row(self, index, epoch: int | None = None) -> VolumeRow:
        """The volume an access returns (for training: the epoch's random pick;
        ``epoch`` None: the one set by ``set_epoch``)."""
        choices = self.items[index]
        if len(choices) == 1:
            return choices[0]
        epoch = self.epoch if epoch is None else epoch
        pick = np.random.default_rng([self.seed, epoch, index]).integers(len(choices))
        return choices[int(pick)]

    def grades(self, row: VolumeRow) -> torch.Tensor:
        masked = self.tasks.masked(row.sequence)
        return torch.tensor([-1 if m else g for g, m in zip(row.grades, masked)], dtype=torch.long)

    def _rows(self, indices) -> list[VolumeRow]:
        return [self.row(i[1], i[0]) if isinstance(i, tuple) else self.row(i) for i in indices]

    def _volume(self, row: VolumeRow) -> torch.Tensor:
        array = load_volume(self.paths[row])
        volume = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))  # (D, H, W)
        return fit_to_shape(volume, self.volume_shape)

    def __getitem__(self, index):
        volumes, grades = self.batch([index])
        return volumes[0], grades[0]

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self._rows(indices)
        names = [volume_name(r) for r in rows]
        if self.cache is not None and all(n in self.cache for n in names):
            volumes = torch.from_numpy(self.cache.gather(names))
        else:
            volumes = torch.stack([self._volume(r) for r in rows])
        return volumes[:, None], torch.stack([self.grades(r) for r in rows])


class _Batches(torch.utils.data.Dataset):
    """A DiscDataset whose DataLoader fetches whole batches: a DataLoader calls
    ``__getitems__`` with a batch's indices where a dataset has it."""

    def __init__(self, dataset: DiscDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index]

    def __getitems__(self, indices):
        return self.dataset.batch(indices)


def _whole_batch(batch):
    """The collate_fn of ``loader``: the batch is whole already."""
    return batch


class EpochSampler(torch.utils.data.Sampler):
    """The indices of one epoch's sampler, each paired with the epoch (see
    DiscDataset). One DataLoader (and its persistent workers) serves every epoch
    of a phase: ``set_epoch`` gives it the next epoch's order."""

    def __init__(self):
        self.epoch, self.order = 0, []

    def set_epoch(self, epoch: int, sampler) -> None:
        self.epoch, self.order = epoch, list(sampler)

    def __iter__(self):
        return iter([(self.epoch, int(i)) for i in self.order])

    def __len__(self) -> int:
        return len(self.order)


def default_num_workers() -> int:
    """DataLoader workers when the configuration names none: with the decoded
    cache a batch is one gather, which the main process does fastest on a small
    machine; from 8 CPUs on, workers overlap it (and decoding, without a cache)
    with the step."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cpus < 8 else min(8, cpus // 4)


def loader(dataset: DiscDataset, batch_size: int, *, sampler=None, drop_last: bool = False, num_workers: int = 0,
           device: torch.device | str = "cpu") -> torch.utils.data.DataLoader:
    """A DataLoader of whole batches (``DiscDataset.batch``): pinned memory for a
    CUDA device (copy with ``non_blocking=True``), persistent workers with
    prefetch when ``num_workers`` > 0."""
    cuda = torch.device(device).type == "cuda"
    workers = dict(persistent_workers=True, prefetch_factor=2) if num_workers > 0 else {}
    return torch.utils.data.DataLoader(_Batches(dataset), batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                                       num_workers=num_workers, collate_fn=_whole_batch, pin_memory=cuda, **workers)


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
