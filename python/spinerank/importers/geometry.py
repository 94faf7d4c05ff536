"""Where a disc is and how it is cut out: the disc frame and the aligned crop,
shared by every importer and by ``spinerank predict`` on whole series.

World coordinates here are those of the scan's file: ITK/DICOM **LPS**
millimetres (+x patient left, +y posterior, +z superior). A scan is an array
indexed ``[k, j, i]`` (SimpleITK's ``GetArrayFromImage``) with the 4 x 4 matrix
``index_to_world`` taking (i, j, k, 1) to LPS: orientation always comes from the
file's own direction cosines, never from the axis order (SPIDER stores the
sagittal axis first in most files and last in others).

A crop (SPEC §10) is an (H, W, D) array on a regular grid around the disc:

- rows (H) along the disc's normal, superior -> inferior;
- columns (W) along the disc's anterior -> posterior axis;
- slices (D) from the patient's left to right;

centred on the disc, at a fixed spacing in millimetres (``CropGrid``). The crop
is written as NIfTI whose affine maps its voxel (r, c, s) to the source scan's
world point in **RAS** (NIfTI's convention: x and y of LPS negated), so anyone
can check where every voxel came from.
"""
from __future__ import annotations

import dataclasses

import numpy as np

#: LPS unit vectors of the patient's directions.
SUPERIOR = np.array([0.0, 0.0, 1.0])
POSTERIOR = np.array([0.0, 1.0, 0.0])
RIGHT = np.array([-1.0, 0.0, 0.0])
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

#: A disc normal further than this from the sagittal plane is taken for the
#: patient's left-right axis (a disc seen on too few slices): see disc_frame.
MAX_NORMAL_TILT_FROM_SAGITTAL_DEG = 45.0


@dataclasses.dataclass(frozen=True)
class CropGrid:
    """The crop's size (rows, columns, slices) and spacing in mm.

    The defaults give the paper preset's volume (TrainConfig.volume_shape
    (D, H, W) = (15, 192, 320)) covering 57.6 mm along the disc normal (the disc
    and most of both vertebral bodies), 96 mm anterior -> posterior (disc, canal
    and facets) and 60 mm left -> right (both foramina) at 0.3 x 0.3 x 4 mm."""

    shape: tuple[int, int, int] = (192, 320, 15)
    spacing: tuple[float, float, float] = (0.3, 0.3, 4.0)

    def __post_init__(self):
        shape = tuple(int(v) for v in self.shape)
        spacing = tuple(float(v) for v in self.spacing)
        if len(shape) != 3 or min(shape) < 1 or max(shape) > 4096:
            raise ValueError(f"crop shape must be three sizes in 1..4096 (rows, columns, slices), got {self.shape!r}")
        if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0 or max(spacing) > 100:
            raise ValueError(f"crop spacing must be three numbers in (0, 100] mm, got {self.spacing!r}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        return tuple(n * s for n, s in zip(self.shape, self.spacing))

    def to_dict(self) -> dict:
        return {"shape_hwd": list(self.shape), "spacing_mm": list(self.spacing),
                "extent_mm": [round(v, 3) for v in self.extent_mm]}


@dataclasses.dataclass(frozen=True)
class DiscFrame:
    """A disc's centre and axes in LPS: ``rows`` the normal pointing inferior,
    ``columns`` anterior -> posterior in the disc plane, ``slices`` towards the
    patient's right; orthonormal."""

    centre: np.ndarray
    rows: np.ndarray
    columns: np.ndarray
    slices: np.ndarray

    @property
    def axes(self) -> np.ndarray:
        """(3, 3): column m is the LPS direction of crop axis m (rows, columns, slices)."""
        return np.stack([self.rows, self.columns, self.slices], axis=1)

    def crop_to_world(self, grid: CropGrid) -> np.ndarray:
        """4 x 4 LPS matrix of crop voxel (r, c, s, 1); the centre of the grid is
        ``centre`` (between two voxels along an even axis)."""
        scaled = self.axes * np.asarray(grid.spacing)[None, :]
        half = (np.asarray(grid.shape, dtype=float) - 1.0) / 2.0
        matrix = np.eye(4)
        matrix[:3, :3] = scaled
        matrix[:3, 3] = self.centre - scaled @ half
        return matrix

    def affine_ras(self, grid: CropGrid) -> np.ndarray:
        """The crop's NIfTI affine: voxel (r, c, s) -> the source scan's RAS mm."""
        flip = np.eye(4)
        flip[:3, :3] = LPS_TO_RAS
        return flip @ self.crop_to_world(grid)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def frame_from_normal(centre, normal, lateral_hint=RIGHT) -> DiscFrame:
    """The crop frame of a disc at ``centre`` with plane normal ``normal`` (any
    sign): slices along the patient's right made orthogonal to the normal,
    columns their cross product (which then points posterior)."""
    centre = np.asarray(centre, dtype=float)
    normal = _unit(np.asarray(normal, dtype=float))
    if normal @ SUPERIOR > 0:
        normal = -normal  # rows run superior -> inferior
    right = np.asarray(lateral_hint, dtype=float) - (np.asarray(lateral_hint, dtype=float) @ normal) * normal
    if np.linalg.norm(right) < 1e-6:
        raise ValueError("the disc normal is parallel to the patient's left-right axis")
    right = _unit(right)
    # (inferior, posterior, right) is left-handed: inferior x right = posterior.
    posterior = np.cross(normal, right)
    return DiscFrame(centre, normal, posterior, right)


def disc_frame(points, weights=None) -> DiscFrame:
    """The frame of a disc from the LPS positions (N, 3) of its mask voxels.

    Centre: the mean position. Normal: the axis of least spread (a disc is about
    four times wider than thick). Where that axis lies more than
    ``MAX_NORMAL_TILT_FROM_SAGITTAL_DEG`` from the sagittal plane, the disc was
    seen on too few sagittal slices for its width to show, and the normal is
    taken from the spread within the sagittal plane instead (no disc of a
    lumbar spine tilts that far to the side)."""
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) < 4:
        raise ValueError(f"a disc frame needs at least 4 voxel positions, got {len(points)}")
    w = np.ones(len(points)) if weights is None else np.asarray(weights, dtype=float)
    centre = (points * w[:, None]).sum(0) / w.sum()
    offsets = points - centre
    covariance = (offsets * w[:, None]).T @ offsets / w.sum()
    values, vectors = np.linalg.eigh(covariance)
    normal = vectors[:, 0]
    if abs(normal @ RIGHT) > np.cos(np.radians(90.0 - MAX_NORMAL_TILT_FROM_SAGITTAL_DEG)):
        in_plane = np.eye(3) - np.outer(RIGHT, RIGHT)
        sagittal = in_plane @ covariance @ in_plane
        values, vectors = np.linalg.eigh(sagittal)
        # The right axis itself has (near) zero spread here: take the least of the other two.
        candidates = [v for v in vectors.T if abs(v @ RIGHT) < 0.5]
        normal = min(candidates, key=lambda v: v @ sagittal @ v)
    if not np.all(np.isfinite(normal)) or values.max() <= 0:
        raise ValueError("the disc's voxels do not span a plane")
    return frame_from_normal(centre, normal)


@dataclasses.dataclass
class Scan:
    """A 3-D scan: ``array`` indexed [k, j, i] and its index (i, j, k) -> LPS matrix."""

    array: np.ndarray
    index_to_world: np.ndarray
    source: str = ""

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.index_to_world[:3, :3], axis=0)

    def world_of_indices(self, kji: np.ndarray) -> np.ndarray:
        """LPS of array indices (N, 3) given as (k, j, i)."""
        ijk = np.asarray(kji, dtype=float)[:, ::-1]
        return ijk @ self.index_to_world[:3, :3].T + self.index_to_world[:3, 3]

    def same_grid(self, other: "Scan", tolerance_mm: float = 1e-3) -> bool:
        if self.array.shape != other.array.shape:
            return False
        corners = np.array([[0, 0, 0], [s - 1 for s in self.array.shape]], dtype=float)
        return bool(np.allclose(self.world_of_indices(corners), other.world_of_indices(corners), atol=tolerance_mm)
                    and np.allclose(self.index_to_world[:3, :3], other.index_to_world[:3, :3], atol=1e-5))

    def describe(self) -> str:
        i, j, k = self.array.shape[::-1]
        return f"{i}x{j}x{k} voxels at {'x'.join(f'{s:.4g}' for s in self.spacing)} mm"


def index_to_world(origin, spacing, direction) -> np.ndarray:
    """4 x 4 (i, j, k, 1) -> LPS from ITK's origin, spacing and row-major direction."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(direction, dtype=float).reshape(3, 3) * np.asarray(spacing, dtype=float)[None, :]
    matrix[:3, 3] = origin
    return matrix


def resample(scan: Scan, frame: DiscFrame, grid: CropGrid, *, order: int = 1) -> np.ndarray:
    """The scan on the crop grid (H, W, D) float32; NaN where the grid leaves the
    scan. ``order`` 1: trilinear (images); 0: nearest (masks)."""
    from scipy import ndimage

    to_index = np.linalg.inv(scan.index_to_world) @ frame.crop_to_world(grid)
    rows, cols, slices = (np.arange(n, dtype=np.float64) for n in grid.shape)
    r, c, s = np.meshgrid(rows, cols, slices, indexing="ij")
    voxels = np.stack([r.ravel(), c.ravel(), s.ravel(), np.ones(r.size)])
    ijk = (to_index @ voxels)[:3]
    kji = ijk[::-1]
    array = scan.array
    if order == 0:
        kji = np.rint(kji)
    values = ndimage.map_coordinates(array.astype(np.float32, copy=False), kji, order=order, mode="constant",
                                     cval=np.nan, prefilter=False)
    # map_coordinates fills only points beyond half a voxel outside: a voxel's own footprint counts as inside.
    extent = np.asarray(array.shape, dtype=float)[:, None]
    outside = ((kji < -0.5) | (kji > extent - 0.5)).any(axis=0)
    values[outside] = np.nan
    return values.reshape(grid.shape).astype(np.float32)


#: Percentiles the crop's intensities are clipped to before standardising.
CLIP_PERCENTILES = (0.5, 99.5)


def normalise(crop: np.ndarray) -> tuple[np.ndarray, float]:
    """(normalised crop, in-field fraction). The voxels inside the scan are
    clipped to their 0.5th-99.5th percentiles and standardised to mean 0 and
    standard deviation 1 (as the synthetic cohort's volumes, SPEC §10); voxels
    outside the scan are 0, the mean."""
    inside = np.isfinite(crop)
    fraction = float(inside.mean())
    out = np.zeros(crop.shape, dtype=np.float32)
    if not inside.any():
        return out, 0.0
    values = crop[inside].astype(np.float64)
    low, high = np.percentile(values, CLIP_PERCENTILES)
    values = np.clip(values, low, high)
    std = values.std()
    if std > 0:  # a constant crop (a blank region) stays 0
        out[inside] = ((values - values.mean()) / std).astype(np.float32)
    return out, fraction


def nifti_bytes(crop: np.ndarray, affine_ras: np.ndarray) -> bytes:
    """A gzipped NIfTI-1 of ``crop`` (H, W, D) float32 with its affine as both
    qform and sform (code 1: scanner coordinates)."""
    import gzip

    import nibabel

    image = nibabel.Nifti1Image(np.asarray(crop, dtype=np.float32), affine_ras)
    image.header.set_qform(affine_ras, code=1)
    image.header.set_sform(affine_ras, code=1)
    image.header.set_xyzt_units("mm")
    # Level 1: float32 crops shrink little more at higher levels (~10 %) but take ~4x as long.
    return gzip.compress(image.to_bytes(), compresslevel=1, mtime=0)
