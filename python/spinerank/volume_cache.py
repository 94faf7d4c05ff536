"""A dataset's volumes decoded once: one memory-mapped array per dataset and
volume shape, read by training, calibration, evaluation and ``spinerank cache``.

Decoding a ``.nii.gz`` crop of the paper's size (15 x 192 x 320) takes tens of
milliseconds, and every epoch used to decode every volume again. The cache holds
each volume of ``labels.csv`` exactly as the dataset hands it to the model
(``load_volume``, transposed to (D, H, W), ``fit_to_shape``), so batches are the
same bit for bit with and without it, in **float32**: float16 would halve its size
but make a run's numbers depend on whether the cache was used.

Files, in ``DATA/.cache/`` (or ``$SPINERANK_CACHE_DIR/<hash of DATA>/``):

- ``volumes-<D>x<H>x<W>.json``: the index: for every volume its row in the array
  and its source file's name, size and modification time, and the name of the
  array file;
- ``volumes-<D>x<H>x<W>-<token>.npy``: the array (N, D, H, W), a plain .npy file
  opened read-only as a memory map. A volume that cannot be read is left out
  (and listed): it is read, and its error reported, where it is used.

Never silently stale: on every open each source file is checked (size and
modification time) against the index, and a volume added, removed or changed
rebuilds the whole cache. A build writes a new array under a new token, then the
index (atomically), then removes the old array, all under an exclusive lock
(``fcntl.flock``), so several DDP ranks or commands opening the same dataset at
once build it once, and a reader never pairs an index with another array.
DataLoader workers open the memory map in their own process.

``SPINERANK_CACHE=0`` turns the cache off (volumes are decoded on every read).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import sys
import time
import uuid

import numpy as np

from .checkpoint import atomic_write_text, current_umask

ENABLE_ENV = "SPINERANK_CACHE"
DIR_ENV = "SPINERANK_CACHE_DIR"
VERSION = 1
DTYPE = np.float32
#: Batch buffers kept for reuse per process (a batch in use is never overwritten).
MAX_BUFFERS = 4


def enabled() -> bool:
    return os.environ.get(ENABLE_ENV, "1").strip() != "0"


def cache_dir(data_dir) -> pathlib.Path:
    data_dir = pathlib.Path(data_dir).resolve()
    root = os.environ.get(DIR_ENV)
    if root:
        return pathlib.Path(root) / hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    return data_dir / ".cache"


def _stamp(path: pathlib.Path) -> list:
    stat = path.stat()
    return [path.name, stat.st_size, stat.st_mtime_ns]


@contextlib.contextmanager
def _locked(path: pathlib.Path):
    """An exclusive lock on ``path`` (created if needed) for the block."""
    import fcntl

    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class VolumeCache:
    """The decoded volumes of ``paths`` ({name: source file}) at ``shape`` (D, H, W)."""

    def __init__(self, folder: pathlib.Path, index: dict):
        self.folder = folder
        self.rows = {name: entry[0] for name, entry in index["volumes"].items()}
        self.file = folder / index["array"]
        self.shape = tuple(index["shape"])
        self._array = None  # opened lazily, in each process that reads
        self._buffers: list[np.ndarray] = []

    def __getstate__(self):  # a DataLoader worker opens its own memory map and buffers
        return {**self.__dict__, "_array": None, "_buffers": []}

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.file, mmap_mode="r")
        return self._array

    def __contains__(self, name: str) -> bool:
        return name in self.rows

    def gather(self, names) -> np.ndarray:
        """(B, D, H, W) float32: the volumes ``names``, copied from the memory map.

        The batch is written into a buffer of an earlier batch that nothing
        references any more (a tensor made from it with ``torch.from_numpy``
        holds a reference): a fresh 100 MB array costs more in page faults than
        the copy itself (about half the throughput, measured with
        benchmarks/bench_pipeline.py). One copy per volume: ``np.take(...,
        out=)`` buffers its output."""
        out = self._free_buffer((len(names), *self.shape))
        array = self.array
        for i, name in enumerate(names):
            out[i] = array[self.rows[name]]
        return out

    def _free_buffer(self, shape) -> np.ndarray:
        for buffer in self._buffers:
            # References: the list, the loop variable and getrefcount's argument; any more is a live batch.
            if buffer.shape == shape and sys.getrefcount(buffer) <= 3:
                return buffer
        buffer = np.empty(shape, dtype=DTYPE)
        if len(self._buffers) < MAX_BUFFERS:
            self._buffers.append(buffer)
        return buffer

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.array.shape)) * self.array.dtype.itemsize


def _index_path(folder: pathlib.Path, shape) -> pathlib.Path:
    return folder / f"volumes-{'x'.join(map(str, shape))}.json"


def _valid(index: dict | None, folder: pathlib.Path, stamps: dict[str, list], shape) -> bool:
    if not (isinstance(index, dict) and index.get("version") == VERSION and index.get("shape") == list(shape)
            and index.get("dtype") == np.dtype(DTYPE).name and (folder / str(index.get("array"))).is_file()):
        return False
    known = {n: e[1] for n, e in index.get("volumes", {}).items()}
    known.update(index.get("unreadable", {}))
    return known == stamps


def _read_index(path: pathlib.Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def open_cache(data_dir, paths: dict[str, pathlib.Path], shape, *, progress: bool = True) -> VolumeCache | None:
    """The cache of ``paths`` ({volume name: source file}) at ``shape`` (D, H, W),
    built or rebuilt if missing or stale; None when turned off (SPINERANK_CACHE=0)."""
    if not enabled():
        return None
    shape = tuple(int(v) for v in shape)
    folder = cache_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stamps = {name: _stamp(pathlib.Path(p)) for name, p in sorted(paths.items())}
    index_path = _index_path(folder, shape)
    index = _read_index(index_path)
    if not _valid(index, folder, stamps, shape):
        with _locked(folder / (index_path.stem + ".lock")):
            index = _read_index(index_path)  # another process may have built it meanwhile
            if not _valid(index, folder, stamps, shape):
                index = _build(folder, index_path, paths, stamps, shape, index, progress)
    return VolumeCache(folder, index)


def _build(folder, index_path, paths, stamps, shape, old, progress) -> dict:
    import torch
    from .progress import progress_bar

    from .data import fit_to_shape, load_volume

    names = sorted(paths)
    array_name = f"{index_path.stem}-{uuid.uuid4().hex[:12]}.npy"
    tmp = folder / f".{array_name}.tmp"
    started = time.perf_counter()
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=DTYPE, shape=(len(names), *shape))
        rows, unreadable = {}, {}
        for name in progress_bar(names, desc="caching volumes", unit="volume", leave=False, disable=not progress):
            try:
                volume = torch.from_numpy(np.ascontiguousarray(load_volume(paths[name]).transpose(2, 0, 1)))
            except ValueError:  # not cached: read (and its error reported) where it is used
                unreadable[name] = stamps[name]
                continue
            rows[name] = len(rows)
            out[rows[name]] = fit_to_shape(volume, shape).numpy()
        out.flush()
        del out
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, folder / array_name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    index = {"version": VERSION, "shape": list(shape), "dtype": np.dtype(DTYPE).name, "array": array_name,
             "volumes": {n: [row, stamps[n]] for n, row in rows.items()}, "unreadable": unreadable,
             "seconds": round(time.perf_counter() - started, 2)}
    atomic_write_text(index_path, json.dumps(index) + "\n")
    if isinstance(old, dict) and old.get("array") and old["array"] != array_name:
        (folder / old["array"]).unlink(missing_ok=True)  # readers that opened it keep their mapping
    return index

