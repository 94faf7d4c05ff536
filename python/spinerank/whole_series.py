"""Every disc of a whole sagittal series, cut out as the training crops were:
``spinerank predict --checkpoint CKPT --mask MASK IMAGE`` or ``--disc-points CSV IMAGE``.

The crop grid (size and spacing) is the one recorded by the importer of the
run's dataset (``RUN/dataset.json``, ``crop``); the frame of each disc comes

- with ``--mask``: from the disc's voxels (SPIDER's label scheme: discs 201, 202,
  ... counted from the bottom, 201 = L5/S1 assuming five lumbar vertebrae), as
  ``spinerank import spider`` does;
- with ``--disc-points``: from a CSV of disc centres in the scan's world
  coordinates, **RAS millimetres** (NIfTI's convention; negate x and y of
  DICOM/ITK LPS coordinates), columns ``level, x, y, z`` and optionally the disc
  normal ``nx, ny, nz`` (either sign). Without a normal, the spine's local
  axis is used: the direction between the neighbouring discs' centres (with
  one disc: the patient's superior-inferior axis). For a DICOM series
  (``--dicom DIR``) the points may instead be given as the RSNA 2024
  competition gives them: ``level, instance_number, x, y``, pixel coordinates
  (x column, y row) on that instance of the series.
"""
from __future__ import annotations

import csv
import io
import json
import math
import pathlib
import sys

import numpy as np

from .importers import geometry
from .importers.common import read_image
from .importers.spider import DISC_LABEL_OFFSET, LEVELS, disc_crop, disc_labels

#: The columns a whole-series prediction adds after ``file``.
COLUMNS = ("disc", "level", "centre_r", "centre_a", "centre_s", "in_field")
POINT_COLUMNS = ("level", "x", "y", "z")
NORMAL_COLUMNS = ("nx", "ny", "nz")


def crop_grid(predictor) -> geometry.CropGrid:
    """The crop grid of the run's training data; for a run whose dataset was not
    imported (no crop recorded), the default grid's field of view at the run's
    volume shape, with a warning."""
    record_path = predictor.checkpoint.parent / "dataset.json"
    try:
        crop = json.loads(record_path.read_text()).get("crop")
    except (OSError, ValueError, AttributeError):
        crop = None
    if isinstance(crop, dict) and "shape_hwd" in crop and "spacing_mm" in crop:
        return geometry.CropGrid(tuple(crop["shape_hwd"]), tuple(crop["spacing_mm"]))
    d, h, w = predictor.config.volume_shape
    default = geometry.CropGrid()
    grid = geometry.CropGrid((h, w, d), tuple(e / n for e, n in zip(default.extent_mm, (h, w, d))))
    print(f"spinerank: warning: {record_path} records no crop geometry (the run was not trained on an imported "
          f"dataset); cutting {h} x {w} x {d} crops of {' x '.join(f'{e:g}' for e in grid.extent_mm)} mm",
          file=sys.stderr)
    return grid


def read_disc_points(path, series=None) -> list[dict]:
    """The discs of a ``--disc-points`` CSV: [{"level", "centre" (LPS), "normal"
    (LPS or None), "line"}]. ``series`` (a dicom.Series) allows pixel coordinates."""
    path = pathlib.Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ValueError(f"--disc-points {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"--disc-points {path} is not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in reader.fieldnames or []]
    reader.fieldnames = header
    if "instance_number" in header:
        return _pixel_points(path, reader, header, series)
    missing = [c for c in POINT_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"--disc-points {path}: missing column(s) {', '.join(missing)}; expected level, x, y, z "
                         f"(RAS mm) and optionally nx, ny, nz (has {', '.join(header) or 'no header'})")
    has_normal = all(c in header for c in NORMAL_COLUMNS)
    points = []
    for record in reader:
        line = reader.line_num

        def number(column):
            cell = (record.get(column) or "").strip()
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise ValueError(f"--disc-points {path}, line {line}, column {column}: {cell!r} is not a finite "
                                 "number (mm)")
            return value

        ras = np.array([number(c) for c in ("x", "y", "z")])
        normal = None
        if has_normal and any((record.get(c) or "").strip() for c in NORMAL_COLUMNS):
            normal = np.array([number(c) for c in NORMAL_COLUMNS])
            if np.linalg.norm(normal) < 1e-9:
                raise ValueError(f"--disc-points {path}, line {line}: the normal (nx, ny, nz) is zero")
            normal = geometry.LPS_TO_RAS @ normal
        points.append({"level": (record.get("level") or "").strip(), "centre": geometry.LPS_TO_RAS @ ras,
                       "normal": normal, "line": line})
    if not points:
        raise ValueError(f"--disc-points {path} lists no disc")
    return points


def _pixel_points(path, reader, header, series) -> list[dict]:
    """level, instance_number, x, y: pixel coordinates on an instance of the --dicom series."""
    if series is None:
        raise ValueError(f"--disc-points {path} gives pixel coordinates (instance_number, x, y): they need the "
                         "DICOM series they refer to (--dicom DIR)")
    missing = [c for c in ("level", "x", "y") if c not in header]
    if missing:
        raise ValueError(f"--disc-points {path}: missing column(s) {', '.join(missing)}")
    points = []
    for record in reader:
        line = reader.line_num
        try:
            number = int(float(record["instance_number"]))
            x, y = float(record["x"]), float(record["y"])
            if not (math.isfinite(x) and math.isfinite(y)):
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(f"--disc-points {path}, line {line}: instance_number, x, y must be numbers") from None
        instance = series.instances.get(number)
        if instance is None:
            raise ValueError(f"--disc-points {path}, line {line}: series {series.folder} has no instance {number}")
        points.append({"level": (record.get("level") or "").strip(), "centre": instance.world(x, y), "normal": None,
                       "line": line})
    if not points:
        raise ValueError(f"--disc-points {path} lists no disc")
    return points


def spine_normals(centres: np.ndarray) -> np.ndarray:
    """The local spine axis at each disc centre (LPS, N x 3): the direction
    between its neighbours along the spine (one-sided at the ends)."""
    if len(centres) == 1:
        return geometry.SUPERIOR[None, :].copy()
    order = np.argsort(centres[:, 2])
    ranked = centres[order]
    axes = np.empty_like(ranked)
    for i in range(len(ranked)):
        below, above = ranked[max(i - 1, 0)], ranked[min(i + 1, len(ranked) - 1)]
        axes[i] = (above - below) / np.linalg.norm(above - below)
    normals = np.empty_like(axes)
    normals[order] = axes
    return normals


def _info(label, level, frame: geometry.DiscFrame, fraction: float) -> dict:
    r, a, s = geometry.LPS_TO_RAS @ frame.centre
    return {"disc": label, "level": level, "centre_r": f"{r:.2f}", "centre_a": f"{a:.2f}", "centre_s": f"{s:.2f}",
            "in_field": f"{fraction:.3f}"}


def disc_items(predictor, inputs, *, mask=None, disc_points=None, dicom_folder=None):
    """(image, info, crop (H, W, D) or the ValueError that stopped it) per disc of the one series."""
    if mask is not None and disc_points is not None:
        raise ValueError("give either --mask or --disc-points, not both")
    series = None
    if dicom_folder is not None:
        if inputs:
            raise ValueError(f"--dicom {dicom_folder} is the series; give no other input (got {len(inputs)})")
        if disc_points is None:
            raise ValueError("--dicom needs --disc-points (where the discs are)")
        from .importers import dicom

        series = dicom.read_series(dicom_folder)
        for problem in series.problems:
            print(f"spinerank: warning: {problem}", file=sys.stderr)
        image, scan = str(dicom_folder), series.scan
    elif len(inputs) != 1:
        raise ValueError(f"--mask and --disc-points cut the discs of one whole series: give exactly one image "
                         f"(got {len(inputs)})")
    else:
        image = str(inputs[0])
        scan = read_image(image)
    grid = crop_grid(predictor)
    if mask is not None:
        labels = read_image(mask)
        if labels.array.dtype.kind not in "iub":
            raise ValueError(f"mask {mask} holds {labels.array.dtype} values; a label mask holds integers")
        if not scan.same_grid(labels):
            raise ValueError(f"image {image} ({scan.describe()}) and mask {mask} ({labels.describe()}) are not on "
                             "the same grid")
        found = sorted(disc_labels(labels.array))
        if not found:
            raise ValueError(f"mask {mask} has no disc labels (201, 202, ...: SPIDER's scheme)")
        for label in found:
            level = LEVELS.get(label - DISC_LABEL_OFFSET, f"IVD{label - DISC_LABEL_OFFSET}")
            result, problem = disc_crop(scan, labels, label, grid)
            if problem:
                yield image, {"disc": label, "level": level}, ValueError(f"{image}, {problem}")
                continue
            crop, fraction, frame = result
            yield image, _info(label, level, frame, fraction), crop
        return
    points = read_disc_points(disc_points, series)
    centres = np.stack([p["centre"] for p in points])
    estimated = spine_normals(centres)
    for i, point in enumerate(points):
        normal = point["normal"] if point["normal"] is not None else estimated[i]
        name = point["level"] or f"line {point['line']}"
        try:
            frame = geometry.frame_from_normal(point["centre"], normal)
        except ValueError as exc:
            yield image, {"level": point["level"]}, ValueError(f"--disc-points {disc_points}, {name}: {exc}")
            continue
        crop, fraction = geometry.normalise(geometry.resample(scan, frame, grid, order=1))
        if fraction == 0:
            yield image, {"level": point["level"]}, ValueError(
                f"--disc-points {disc_points}, {name}: the crop around it lies outside {image}")
            continue
        yield image, _info("", point["level"], frame, fraction), crop
