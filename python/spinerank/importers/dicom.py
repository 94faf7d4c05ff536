"""A DICOM series as a scan with its geometry (pydicom; ``pip install '.[data]'``).

What a folder of ``.dcm`` files of one series becomes:

- each instance's pixel (column x, row y) lies at ``ImagePositionPatient +
  x * PixelSpacing[1] * row_direction + y * PixelSpacing[0] * column_direction``
  (LPS mm; ``ImageOrientationPatient`` holds the row direction, then the column
  direction; ``PixelSpacing`` is [between rows, between columns]);
- instances are grouped into stacks by their orientation (rounded to 3
  decimals: an axial series may hold several angled stacks), and the largest
  stack is the scan; within it, slices are ordered by the position of
  ``ImagePositionPatient`` along the slice normal (row x column direction).
  File names and ``InstanceNumber`` are not spatial order: instance numbers run
  either way, or in no order at all;
- the slice spacing comes from those positions, never from
  ``SpacingBetweenSlices`` or ``SliceThickness`` (often missing or wrong);
- pixel values are ``RescaleSlope * stored + RescaleIntercept`` where given.

What cannot be used is named in ``problems`` (a file pydicom cannot read, an
instance without geometry, other stacks, other image sizes) rather than raised;
a series with no usable stack, or slices that are not evenly spaced, raises
ValueError naming the folder.
"""
from __future__ import annotations

import dataclasses
import pathlib
from collections import Counter, defaultdict

import numpy as np

from . import geometry

#: Slices whose spacing differs from the median by more than this fraction are not one regular grid.
MAX_SPACING_DEVIATION = 0.1


@dataclasses.dataclass(frozen=True)
class Instance:
    """One image's geometry: where pixel (0, 0) is and where its rows and columns run (LPS)."""

    number: int
    file: str
    position: np.ndarray
    row_direction: np.ndarray  # increasing column index x
    column_direction: np.ndarray  # increasing row index y
    pixel_spacing: tuple[float, float]  # (between rows, between columns)
    size: tuple[int, int]  # (rows, columns)

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.row_direction, self.column_direction)
        return n / np.linalg.norm(n)

    def world(self, x: float, y: float) -> np.ndarray:
        """LPS of pixel coordinates (x = column, y = row, floats) on this instance."""
        return (self.position + x * self.pixel_spacing[1] * self.row_direction
                + y * self.pixel_spacing[0] * self.column_direction)


@dataclasses.dataclass
class Series:
    folder: str
    scan: geometry.Scan
    instances: dict[int, Instance]  # every readable instance with geometry, by InstanceNumber
    problems: list[str]
    manufacturer: str = ""
    field_strength: str = ""


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise ValueError("reading DICOM needs pydicom: pip install 'spinerank_ext[data]' (or pip install pydicom)") \
            from None
    return pydicom


def _instance(ds, file: pathlib.Path) -> Instance:
    number = int(ds.InstanceNumber) if "InstanceNumber" in ds else int(file.stem)
    orientation = np.array([float(v) for v in ds.ImageOrientationPatient])
    row, column = orientation[:3], orientation[3:]
    if orientation.shape != (6,) or not np.isfinite(orientation).all() or abs(row @ column) > 1e-3 \
            or min(np.linalg.norm(row), np.linalg.norm(column)) < 0.5:
        raise ValueError(f"ImageOrientationPatient {list(orientation)} is not two orthogonal directions")
    position = np.array([float(v) for v in ds.ImagePositionPatient])
    spacing = tuple(float(v) for v in ds.PixelSpacing)
    if position.shape != (3,) or not np.isfinite(position).all() or len(spacing) != 2 or min(spacing) <= 0:
        raise ValueError(f"ImagePositionPatient {list(position)} / PixelSpacing {list(spacing)} unusable")
    return Instance(number, str(file), position, row / np.linalg.norm(row), column / np.linalg.norm(column),
                    spacing, (int(ds.Rows), int(ds.Columns)))


def read_series(folder) -> Series:
    """The series in ``folder`` (its ``*.dcm`` files) as a scan; see the module docstring."""
    pydicom = _pydicom()
    folder = pathlib.Path(folder)
    files = sorted(folder.glob("*.dcm"))
    if not files:
        raise ValueError(f"DICOM series {folder} holds no .dcm files")
    problems, instances, headers = [], {}, {}
    for file in files:
        try:
            ds = pydicom.dcmread(str(file), stop_before_pixels=True)
            instance = _instance(ds, file)
        except Exception as exc:  # pydicom raises many kinds on a damaged file
            problems.append(f"{file}: {type(exc).__name__}: {exc}" if not isinstance(exc, AttributeError)
                            else f"{file}: no geometry ({exc})")
            continue
        if instance.number in instances:
            problems.append(f"{file}: InstanceNumber {instance.number} also in {instances[instance.number].file}; "
                            "kept the first")
            continue
        instances[instance.number] = instance
        headers[instance.number] = ds
    if not instances:
        raise ValueError(f"DICOM series {folder}: no readable instance with geometry ({problems[0]})")
    stacks: dict[tuple, list[Instance]] = defaultdict(list)
    for instance in instances.values():
        key = tuple(np.round(np.r_[instance.row_direction, instance.column_direction], 3))
        stacks[key].append(instance)
    stack = max(stacks.values(), key=len)
    if len(stacks) > 1:
        problems.append(f"{folder}: {len(stacks)} stacks of different orientation; the largest ({len(stack)} "
                        f"of {len(instances)} images) used")
    sizes = Counter(i.size for i in stack)
    size = sizes.most_common(1)[0][0]
    if len(sizes) > 1:
        odd = sorted(i.number for i in stack if i.size != size)
        problems.append(f"{folder}: images of {len(sizes)} sizes; {len(odd)} of size other than {size} left out "
                        f"(instances {odd[:10]})")
        stack = [i for i in stack if i.size == size]
    normal = stack[0].normal
    stack.sort(key=lambda i: float(i.position @ normal))
    along = np.array([float(i.position @ normal) for i in stack])
    if len(stack) > 1:
        steps = np.diff(along)
        spacing = float(np.median(steps))
        if spacing <= 1e-6 or np.abs(steps - spacing).max() > MAX_SPACING_DEVIATION * spacing:
            raise ValueError(f"DICOM series {folder}: slices are not evenly spaced along their normal (steps "
                             f"{np.round(steps, 3).tolist()[:12]} mm); it is not one regular volume")
    else:
        spacing = float(getattr(headers[stack[0].number], "SliceThickness", 0) or 1.0)
    array = np.stack([_pixels(pydicom, stack[k], headers[stack[k].number]) for k in range(len(stack))])
    first = stack[0]
    matrix = np.eye(4)
    matrix[:3, 0] = first.row_direction * first.pixel_spacing[1]  # index i: columns
    matrix[:3, 1] = first.column_direction * first.pixel_spacing[0]  # index j: rows
    matrix[:3, 2] = normal * spacing  # index k: the sorted slices
    matrix[:3, 3] = first.position
    ds = headers[first.number]
    return Series(str(folder), geometry.Scan(array, matrix, str(folder)), instances, problems,
                  str(getattr(ds, "Manufacturer", "") or "").strip(),
                  str(getattr(ds, "MagneticFieldStrength", "") or "").strip())


def _pixels(pydicom, instance: Instance, header) -> np.ndarray:
    try:
        ds = pydicom.dcmread(instance.file)
        pixels = ds.pixel_array.astype(np.float32)
    except Exception as exc:
        raise ValueError(f"{instance.file}: its pixel data cannot be decoded ({type(exc).__name__}: {exc})") from None
    if pixels.shape != instance.size:
        raise ValueError(f"{instance.file}: pixel data of shape {pixels.shape}, header says {instance.size}")
    slope = float(getattr(header, "RescaleSlope", 1) or 1)
    intercept = float(getattr(header, "RescaleIntercept", 0) or 0)
    return pixels * slope + intercept
