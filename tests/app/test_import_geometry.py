"""The disc frame and the aligned crop (importers/geometry.py), tested as geometry:
a disc of known centre and orientation is drawn into scans with oblique,
permuted and flipped axes; the frame found from its voxels, the crop's affine
and the crop's content are compared with the truth in millimetres and degrees."""
import nibabel
import numpy as np
import pytest

from spinerank.importers import geometry

sitk = pytest.importorskip("SimpleITK")


def rotation(axis, degrees):
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    a = np.radians(degrees)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


def angle(u, v):
    return np.degrees(np.arccos(np.clip(abs(float(u @ v)), 0, 1)))


#: Index-axis layouts: column m = LPS direction of index axis m (i, j, k).
LAYOUTS = {
    "slice_first": np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=float).T,  # i: L, j: inferior, k: posterior
    "slice_last": np.array([[0, -1, 0], [0, 0, 1], [-1, 0, 0]], dtype=float).T,  # i: anterior, j: S, k: right
}


class Disc:
    """An elliptic disc: half-thickness 5 mm along ``normal``, semi-axes 20 mm (A-P) and 24 mm (L-R)."""

    def __init__(self, centre, tilt_deg, coronal_deg=0.0):
        n = rotation([1, 0, 0], tilt_deg) @ rotation([0, 1, 0], coronal_deg) @ np.array([0, 0, -1.0])
        self.centre = np.asarray(centre, dtype=float)
        self.normal = n
        right = geometry.RIGHT - (geometry.RIGHT @ n) * n
        self.right = right / np.linalg.norm(right)
        self.posterior = np.cross(n, self.right)

    def local(self, points):
        d = points - self.centre
        return d @ self.normal, d @ self.posterior, d @ self.right

    def inside(self, points):
        a, b, c = self.local(points)
        return ((a / 5) ** 2 < 1) & ((b / 20) ** 2 + (c / 24) ** 2 < 1)

    def intensity(self, points):
        """A smooth pattern that differs along every disc axis (so a wrong axis shows in the content)."""
        a, b, c = self.local(points)
        return 100 + 0.8 * a + 0.5 * b + 0.3 * c + 20 * np.cos(a / 7.0)


def make_scan(layout, oblique_deg, spacing, size, disc: Disc, content="mask"):
    direction = rotation([0.3, 1, 0.2], oblique_deg) @ LAYOUTS[layout]
    ijk_centre = (np.asarray(size) - 1) / 2
    origin = disc.centre + np.array([3.0, -4.0, 2.0]) - direction @ (np.asarray(spacing) * ijk_centre)
    matrix = geometry.index_to_world(origin, spacing, direction.flatten())
    k, j, i = np.meshgrid(*[np.arange(s) for s in size[::-1]], indexing="ij")
    world = np.stack([i.ravel(), j.ravel(), k.ravel()], 1) @ matrix[:3, :3].T + matrix[:3, 3]
    if content == "mask":
        array = np.where(disc.inside(world), 201, 0).astype(np.int16)
    else:
        array = disc.intensity(world).astype(np.float32)
    return geometry.Scan(array.reshape(size[::-1]), matrix)


CASES = [("slice_first", 0.0, (4.0, 1.1, 1.3), 0.0, 0.0), ("slice_first", 12.0, (3.3, 0.9, 0.9), 25.0, 4.0),
         ("slice_last", 9.0, (1.2, 1.0, 4.4), -10.0, -3.0), ("slice_last", 0.0, (1.0, 1.0, 2.0), 30.0, 0.0)]


@pytest.mark.parametrize("layout, oblique, spacing, tilt, coronal", CASES)
def test_frame_and_crop_affine_match_the_disc(layout, oblique, spacing, tilt, coronal):
    disc = Disc([-12.0, 35.0, 60.0], tilt, coronal)
    size = tuple(int(np.ceil(110 / s)) for s in spacing)
    mask = make_scan(layout, oblique, spacing, size, disc)
    kji = np.argwhere(mask.array == 201)
    frame = geometry.disc_frame(mask.world_of_indices(kji))
    slice_mm = max(spacing)
    # The centre: exact up to the sampling of a thick-slice grid.
    assert np.linalg.norm(frame.centre - disc.centre) < min(2.0, slice_mm / 2)
    assert angle(frame.rows, disc.normal) < 5 and frame.rows @ geometry.SUPERIOR < 0
    assert angle(frame.columns, disc.posterior) < 5 and frame.columns @ geometry.POSTERIOR > 0
    assert angle(frame.slices, disc.right) < 5 and frame.slices @ geometry.RIGHT > 0
    grid = geometry.CropGrid((48, 80, 10), (1.2, 1.2, 4.0))
    affine = frame.affine_ras(grid)
    # The affine: the grid's centre is the disc centre, its columns the frame's axes times the spacing, in RAS.
    centre_ras = affine @ np.r_[(np.array(grid.shape) - 1) / 2, 1]
    assert np.allclose(centre_ras[:3], geometry.LPS_TO_RAS @ frame.centre)
    for m, (axis, mm) in enumerate(zip((frame.rows, frame.columns, frame.slices), grid.spacing)):
        assert np.allclose(affine[:3, m], geometry.LPS_TO_RAS @ axis * mm)
    # The crop's content: the image at the world point of every crop voxel (through the affine).
    image = make_scan(layout, oblique, spacing, size, disc, content="image")
    crop = geometry.resample(image, frame, grid)
    r, c, s = np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij")
    world_ras = np.stack([r.ravel(), c.ravel(), s.ravel(), np.ones(r.size)], 1) @ affine.T
    truth = disc.intensity(world_ras[:, :3] @ geometry.LPS_TO_RAS.T).reshape(grid.shape)
    inside = np.isfinite(crop)
    assert inside.mean() > 0.5
    # Trilinear interpolation of a smooth field on a grid with 4.4 mm slices: a few units of 100.
    assert np.abs(crop[inside] - truth[inside]).max() < 6
    assert np.corrcoef(crop[inside], truth[inside])[0, 1] > 0.99


def test_thin_coverage_falls_back_to_the_sagittal_plane():
    """A disc seen on two sagittal slices only: its least spread is left-right; the frame still finds its tilt."""
    disc = Disc([0.0, 0.0, 0.0], 20.0)
    points = []
    for x in (-2.0, 2.0):
        for a in np.linspace(-4.5, 4.5, 7):
            for b in np.linspace(-19, 19, 30):
                points.append(disc.centre + a * disc.normal + b * disc.posterior + x * np.array([1.0, 0, 0]))
    frame = geometry.disc_frame(np.array(points))
    assert angle(frame.rows, disc.normal) < 2


def test_normalise_and_nifti_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    crop = rng.normal(500, 80, (12, 16, 4)).astype(np.float32)
    crop[0] = np.nan  # outside the scan
    crop[1, 0, 0] = 1e6  # an outlier, clipped
    out, fraction = geometry.normalise(crop)
    assert fraction == pytest.approx(11 / 12)
    assert (out[0] == 0).all()
    inside = out[1:]
    assert abs(inside.mean()) < 1e-5 and inside.std() == pytest.approx(1, abs=1e-4)
    assert inside.max() < 4  # the outlier was clipped to the 99.5th percentile
    frame = geometry.frame_from_normal([1.0, 2.0, 3.0], [0.0, 0.3, 1.0])
    grid = geometry.CropGrid((12, 16, 4), (0.5, 0.6, 3.0))
    path = tmp_path / "crop.nii.gz"
    path.write_bytes(geometry.nifti_bytes(out, frame.affine_ras(grid)))
    image = nibabel.load(str(path))
    assert np.allclose(image.affine, frame.affine_ras(grid), atol=1e-5)
    assert image.header.get_sform(coded=True)[1] == 1 and image.header.get_qform(coded=True)[1] == 1
    assert np.array_equal(image.get_fdata(dtype=np.float32), out)


@pytest.mark.parametrize("shape, spacing", [((0, 10, 10), (1, 1, 1)), ((10, 10), (1, 1, 1)),
                                            ((10, 10, 10), (1, 0, 1)), ((10, 10, 10), (1, float("nan"), 1))])
def test_bad_grids_are_refused(shape, spacing):
    with pytest.raises(ValueError, match="crop (shape|spacing)"):
        geometry.CropGrid(shape, spacing)
