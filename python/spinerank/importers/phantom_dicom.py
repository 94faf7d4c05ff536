"""DICOM slice stacks of the phantoms (phantom.py), as rsna_phantom.py writes them:
instance planes in the DICOM convention, with the values as written (decimal strings
rounded) so that the truth agrees with the files; stacks covering given targets; stacks
angled to discs; instance numbering; a target placed on its nearest plane; the
Part-10 MR file of one instance.

Pixel (column x, row y) of an instance lies at ``IPP + x * PixelSpacing[1] * IOP[0:3]
+ y * PixelSpacing[0] * IOP[3:6]``; the slice normal is ``cross(IOP[0:3], IOP[3:6])``.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from .phantom import _unit


# ---- DICOM decimal strings ------------------------------------------------------------

def _ds(value: float, decimals: int) -> str:
    """A DS string (<= 16 characters for the values used here) without trailing zeros."""
    text = f"{float(value):.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _rounded(values, decimals):
    """(texts, floats): what is written and what the truth computes with, identical."""
    texts = [_ds(v, decimals) for v in np.ravel(values)]
    return texts, np.array([float(t) for t in texts])


# ---- slice geometry -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class _Plane:
    """One instance's pixel grid, in the DICOM convention of the module docstring."""
    position: np.ndarray        # ImagePositionPatient: centre of pixel (row 0, column 0)
    row: np.ndarray             # IOP[0:3], direction of increasing column index
    column: np.ndarray          # IOP[3:6], direction of increasing row index
    pixel_spacing: tuple        # (between rows, between columns)
    rows: int
    columns: int
    stack: int = 0

    @property
    def normal(self):
        return _unit(np.cross(self.row, self.column))

    def world(self, x, y):
        return self.position + x * self.pixel_spacing[1] * self.row + y * self.pixel_spacing[0] * self.column

    def pixel_centres(self):
        """(rows, columns, 3) LPS centres, indexed [row, column] like pixel_array."""
        x = np.arange(self.columns) * self.pixel_spacing[1]
        y = np.arange(self.rows) * self.pixel_spacing[0]
        return self.position + y[:, None, None] * self.column + x[None, :, None] * self.row

    def project(self, target):
        """(x, y, distance of target from the plane); row and column are orthonormal."""
        offset = target - self.position
        return (offset @ self.row / self.pixel_spacing[1], offset @ self.column / self.pixel_spacing[0],
                abs(offset @ self.normal))

    def holds(self, x, y):
        return 0.0 <= x <= self.columns - 1 and 0.0 <= y <= self.rows - 1


@dataclasses.dataclass(frozen=True)
class _Orientation:
    """A stack's written direction cosines and spacings."""
    iop_text: list
    row: np.ndarray
    column: np.ndarray
    pixel_spacing_text: list
    pixel_spacing: tuple

    @property
    def normal(self):
        return _unit(np.cross(self.row, self.column))


def _orientation(row, column, row_spacing, column_spacing):
    """Rounds IOP to 10 decimals and PixelSpacing to 4 and keeps both forms."""
    iop_text, iop = _rounded(np.concatenate([row, column]), 10)
    spacing_text, spacing = _rounded([row_spacing, column_spacing], 4)
    return _Orientation(iop_text, iop[:3], iop[3:], spacing_text, (spacing[0], spacing[1]))


def _offsets_covering(along, spacing, min_count, rng):
    """Slice offsets along the normal, ``spacing`` apart, at least ``min_count`` of them,
    such that every value of ``along`` lies between the first and the last slice (so
    within half a spacing of one); the stack is roughly centred on the values."""
    lo, hi = float(np.min(along)), float(np.max(along))
    count = max(int(min_count), int(math.ceil((hi - lo) / spacing)) + 1)
    slack = (count - 1) * spacing - (hi - lo)
    jitter = min(slack / 2, spacing / 2)
    start = lo - slack / 2 + rng.uniform(-jitter, jitter)
    return start + np.arange(count) * spacing


def _field_of_view(points, direction, spacing, min_size, margin, rng):
    """(start, size) along one in-plane axis: the points plus a margin, at least
    ``min_size`` pixels, the points roughly centred (off by up to 15% of the slack)."""
    along = points @ direction
    lo, hi = along.min() - margin, along.max() + margin
    size = max(int(min_size), int(math.ceil((hi - lo) / spacing)) + 1)
    slack = (size - 1) * spacing - (hi - lo)
    return lo - slack / 2 + rng.uniform(-0.15, 0.15) * slack, size


def _planes(orientation, offsets, fov_points, min_sizes, margin, rng, stack=0, sizes=None):
    """The planes of one stack: IPPs at ``offsets`` along the normal, the in-plane field of
    view holding ``fov_points`` (or of the given (rows, columns) ``sizes``), IPP rounded to
    6 decimals."""
    row_spacing, column_spacing = orientation.pixel_spacing
    start_c, columns = _field_of_view(fov_points, orientation.row, column_spacing, min_sizes[1], margin, rng)
    start_r, rows = _field_of_view(fov_points, orientation.column, row_spacing, min_sizes[0], margin, rng)
    if sizes is not None:
        if sizes[0] < rows or sizes[1] < columns:
            raise RuntimeError("a stack does not fit the series' image size")
        rows, columns = sizes
    planes = []
    for offset in offsets:
        position = start_c * orientation.row + start_r * orientation.column + offset * orientation.normal
        planes.append(_Plane(_rounded(position, 6)[1], orientation.row, orientation.column,
                             orientation.pixel_spacing, rows, columns, stack))
    return planes


@dataclasses.dataclass
class _Series:
    series_id: int
    description: str
    planes: list                 # spatial order: by stack (inferior first), then along its normal
    orientations: list           # per stack
    slice_spacing: float
    thickness: float
    oblique: bool = False
    instance_order: str = "along"
    instances: list = dataclasses.field(default_factory=list)   # instance number of planes[k]


# ---- stacks angled to discs, instance numbers, targets -----------------------------

def _axial_frame(discs):
    """(row = patient left, column = posterior) of a stack angled to the mean plane of
    ``discs``; its normal cross(row, column) points superior like IOP [1,0,0,0,1,0]."""
    superior = _unit(-np.sum([d.normal for d in discs], axis=0))
    left = _unit(-np.sum([d.right for d in discs], axis=0))
    left = _unit(left - (left @ superior) * superior)
    return left, np.cross(superior, left)


def _axial_fov_points(discs):
    """Each disc's cross-section from 30 mm anterior to 80 mm posterior of its centre
    (past the spinous process), 35 mm either side."""
    return np.array([d.centre + a * d.posterior + b * d.right
                     for d in discs for a in (-30.0, 80.0) for b in (-35.0, 35.0)])


def _number_instances(series, order, rng):
    """Instance numbers of the planes (spatial order): 1.. along, reversed, or shuffled."""
    count = len(series.planes)
    if order == "along":
        numbers = np.arange(1, count + 1)
    elif order == "against":
        numbers = np.arange(count, 0, -1)
    else:
        numbers = rng.permutation(count) + 1
        if count > 2 and (np.all(numbers == np.arange(1, count + 1)) or np.all(numbers == np.arange(count, 0, -1))):
            numbers = np.roll(numbers, 1)    # a permutation that is neither order
    series.instance_order = order
    series.instances = [int(n) for n in numbers]


def _place(series, target):
    """(plane index, x, y, world) of the target on the nearest plane that holds it."""
    best = None
    for k, plane in enumerate(series.planes):
        x, y, distance = plane.project(target)
        if plane.holds(x, y) and (best is None or distance < best[0]):
            best = (distance, k, x, y)
    if best is None or best[0] > series.slice_spacing / 2 + 1e-6:
        raise RuntimeError(f"series {series.series_id} does not cover a target: {best}")
    _, k, x, y = best
    x, y = float(x), float(y)
    return k, x, y, series.planes[k].world(x, y)


# ---- files ----------------------------------------------------------------------------

def _write_instance(path, header, plane, orientation, instance, pixels, bits_stored, sop_uid):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, PYDICOM_IMPLEMENTATION_UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = int(instance)
    ds.ImagePositionPatient = _rounded(plane.position, 6)[0]
    ds.ImageOrientationPatient = orientation.iop_text
    ds.PixelSpacing = orientation.pixel_spacing_text
    ds.Rows, ds.Columns = plane.rows, plane.columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
