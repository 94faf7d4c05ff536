"""The volume files of a dataset: their names inside volumes/, reading one, checking
every one a command will read before it starts (``preflight``), the decoded-volume
cache of a dataset, and fitting a volume to the model's shape."""
from __future__ import annotations

import concurrent.futures
import os
import pathlib

import numpy as np
import torch

from ..progress import progress_bar
from .labels import VolumeRow, unsafe_id_reason


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
    from .. import volume_cache as cache_lib

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
