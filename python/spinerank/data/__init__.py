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

The package: ``labels`` (labels.csv), ``volumes`` (the files, ``preflight``, the cache),
``splits`` (splits.csv), ``dataset`` (``DiscDataset``, ``loader``); every public name
is importable from ``spinerank.data``.
"""
from .dataset import DiscDataset, EpochSampler, class_weights, default_num_workers, loader
from .labels import ID_COLUMNS, VolumeRow, read_labels, unsafe_id_reason
from .splits import SPLITS, load_or_make_splits, make_splits, split_rows
from .volumes import (NUMERIC_KINDS, PREFLIGHT_LISTED, check_volume, fit_to_shape, load_volume, preflight,
                      volume_cache, volume_name, volume_path)

__all__ = [
    "ID_COLUMNS", "VolumeRow", "read_labels", "unsafe_id_reason",
    "NUMERIC_KINDS", "PREFLIGHT_LISTED", "check_volume", "fit_to_shape", "load_volume", "preflight", "volume_cache",
    "volume_name", "volume_path",
    "SPLITS", "load_or_make_splits", "make_splits", "split_rows",
    "DiscDataset", "EpochSampler", "class_weights", "default_num_workers", "loader",
]
