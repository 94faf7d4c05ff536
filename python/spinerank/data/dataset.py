"""The disc dataset of one split, its whole-batch DataLoader, and the class weights
of the training split."""
from __future__ import annotations

import os
import pathlib
from collections import defaultdict

import numpy as np
import torch

from ..tasks import TaskTable
from .labels import VolumeRow
from .volumes import fit_to_shape, load_volume, volume_name, volume_path


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
