"""A whole-lumbar-spine phantom with known geometry, which the phantom writers image in
a source's on-disk layout (spider_phantom.py: SPIDER; rsna_phantom.py: RSNA 2024).

What the phantom is
-------------------
``SpinePhantom(seed, num_vertebrae)`` is an analytic lumbar spine placed in ITK/DICOM
LPS world millimetres (+x patient left, +y posterior, +z superior), drawn from the seed:

* from the bottom: an unlabelled sacrum block, then disc 201, vertebra 1, disc 202,
  vertebra 2, ..., disc 200+N, vertebra N (SPIDER's scheme: vertebrae numbered from the
  bottom, disc 200+n immediately below vertebra n; the top disc 200+N is in the mask);
* the centreline is a circular arc in the spine's sagittal plane (lumbar lordosis,
  concave posteriorly): L5/S1 is tilted ~22-26 degrees from the spine's superior axis,
  the tilt falls linearly with arc length to ~-8..-2 degrees at the top vertebra;
* every disc is a flat elliptic cylinder (8-11 mm thick, ~35-41 mm AP x ~42-49 mm LR)
  perpendicular to the arc at its centre, then tilted by its own coronal angle
  (+-3 degrees); a nucleus (an ellipsoid inside it, slightly posterior) is drawn only
  in the image;
* a vertebral body (25-30 mm tall) fills the space between the facing disc surfaces
  inside an elliptic cross-section; the top vertebra ends at a plane perpendicular to
  the arc; simple posterior elements (pedicles, lamina, spinous process) carry the
  vertebra's label;
* the spinal canal (label 100) is a tube of radius 7-8 mm concentric with the arc,
  posterior to the bodies and discs, from the sacrum to the top vertebra;
* the whole spine is then rotated by a few degrees about each world axis and moved to a
  random world position, so no structure is axis-aligned.

What it guarantees
------------------
* Mask labels: 0 background (and the sacrum), 1..N vertebrae, 100 canal, 201..200+N discs.
  Discs win over every other structure, so the voxels labelled 200+n are exactly the
  samples of disc n's elliptic cylinder.
* ``DiscTruth`` (``phantom.discs``, ordered by label) holds that cylinder's exact centre
  and plane normal (unit, pointing inferior). Its in-plane axes follow the importer's
  convention: ``right`` is the patient's right (-x) made orthogonal to the normal and
  ``posterior = normal x right``. (The cylinder's own elliptic axes differ from these by
  the few-degree global rotation about the normal.)
* ``labels_at`` / ``intensity_at`` evaluate the phantom at any world points, noise-free.
  T2 nucleus brightness falls strictly with the Pfirrmann grade (1 brightest, 5 darkest).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = ["DiscTruth", "SpinePhantom"]

SEQUENCES = ("t1", "t2", "t2_SPACE")
CANAL_LABEL = 100
DISC_LABEL_OFFSET = 200

_X, _Y, _Z = np.eye(3)

# Tissue classes (image only; the mask carries SPIDER labels).
_BACKGROUND, _BODY, _POSTERIOR, _SACRUM, _CANAL, _ANNULUS, _NUCLEUS = range(7)

#: Noise-free intensity per tissue and sequence (uint16 scale, 0..~2000). T1: marrow
#: bright, discs and CSF dark. T2: CSF bright, bone medium, annulus dark, nucleus by grade.
_TISSUE_INTENSITY = {
    "t1": (0.0, 900.0, 820.0, 860.0, 180.0, 330.0, 420.0),
    "t2": (0.0, 620.0, 560.0, 600.0, 1800.0, 280.0, math.nan),
    "t2_SPACE": (0.0, 520.0, 470.0, 500.0, 1900.0, 250.0, math.nan),
}
#: T2 nucleus brightness by Pfirrmann grade (grade 1 brightest); t2_SPACE scales it.
_NUCLEUS_T2 = {1: 1650.0, 2: 1300.0, 3: 950.0, 4: 620.0, 5: 380.0}
_NUCLEUS_SCALE = {"t2": 1.0, "t2_SPACE": 0.95}
_DEFAULT_GRADE = 1


@dataclasses.dataclass(frozen=True, eq=False)
class DiscTruth:
    """One disc's exact geometry in LPS mm (``eq=False``: fields are arrays, compare them
    with numpy). normal, posterior, right are unit and mutually orthogonal."""
    label: int                 # mask label, 201..
    centre: np.ndarray         # (3,) the disc solid's geometric centre
    normal: np.ndarray         # (3,) the disc plane's normal, pointing inferior (normal[2] < 0)
    posterior: np.ndarray      # (3,) in the disc plane, = normal x right (points posterior)
    right: np.ndarray          # (3,) the patient's right (-x) orthogonalised against normal


def _rotation(axis, degrees):
    """Rotation matrix by ``degrees`` about ``axis`` (right-handed, Rodrigues)."""
    axis = np.asarray(axis, dtype=float)
    axis = axis / np.linalg.norm(axis)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = math.radians(degrees)
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def _unit(v):
    return v / np.linalg.norm(v)


def _frozen(a):
    a = np.array(a, dtype=float)
    a.setflags(write=False)
    return a


def _as_points(points):
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {points.shape}")
    return points


class SpinePhantom:
    """An analytic lumbar spine placed in LPS world space (see the module docstring).

    All construction happens in a "spine" frame (x left, y posterior, z superior, the
    sagittal arc in its y-z plane, arc length s = 0 at the bottom of disc 201); the
    world point of a spine-frame point q is ``rotation @ q + translation``.
    """

    def __init__(self, seed: int = 0, num_vertebrae: int = 7):
        if not 1 <= int(num_vertebrae) <= 12:
            raise ValueError(f"num_vertebrae must be in 1..12, got {num_vertebrae}")
        self.seed = seed
        self.num_vertebrae = n = int(num_vertebrae)
        rng = np.random.default_rng(seed)

        # Sizes from the bottom; lower lumbar bodies are a little larger.
        self._disc_half = rng.uniform(8.0, 11.0, n) / 2
        vertebra_height = rng.uniform(25.0, 30.0, n)
        upward = np.linspace(0.0, 1.0, n)
        body_ap = rng.uniform(37.5, 40.0) - 3.0 * upward + rng.uniform(-0.5, 0.5, n)
        body_lr = rng.uniform(45.5, 48.0) - 4.0 * upward + rng.uniform(-0.5, 0.5, n)
        self._body_semi = np.column_stack([body_ap, body_lr]) / 2
        # A disc bulges 0.5 mm beyond the mean of its two neighbouring endplates (the
        # sacrum's endplate is taken as vertebra 1's).
        below = np.vstack([self._body_semi[:1], self._body_semi[:-1]])
        self._disc_semi = (below + self._body_semi) / 2 + 0.5

        # Arc positions: disc i then vertebra i, stacked from s = 0 upward.
        lengths = np.column_stack([2 * self._disc_half, vertebra_height]).ravel()
        starts = np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
        self._disc_s = starts[0::2] + self._disc_half
        self._vertebra_s = starts[1::2] + vertebra_height / 2
        self._vertebra_half = vertebra_height / 2
        self._length = float(lengths.sum())

        # Lordosis: tangent angle (towards anterior) falls linearly along the arc.
        self._theta0 = math.radians(rng.uniform(22.0, 26.0))
        theta_top = math.radians(rng.uniform(-8.0, -2.0))
        self._radius = self._length / (self._theta0 - theta_top)

        # Disc frames (rows: superior tangent t, posterior p, left l), each tilted about p
        # by its own coronal angle.
        coronal = np.radians(rng.uniform(-3.0, 3.0, n))
        self._disc_centre = np.array([self._arc_point(s) for s in self._disc_s])
        self._disc_axes = np.array([self._tilted_frame(s, c) for s, c in zip(self._disc_s, coronal)])
        self._vertebra_centre = np.array([self._arc_point(s) for s in self._vertebra_s])
        self._vertebra_axes = np.array([self._tilted_frame(s, 0.0) for s in self._vertebra_s])
        self._top_point = self._arc_point(self._length)
        self._top_tangent = self._tilted_frame(self._length, 0.0)[0]

        self._sacrum_bottom_s = -45.0
        self._sacrum_centre = self._arc_point(-20.0)
        self._sacrum_axes = self._tilted_frame(-20.0, 0.0)
        self._sacrum_semi = self._body_semi[0] + np.array([1.0, 3.0])

        self._canal_radius = rng.uniform(7.0, 8.0)
        # Centre of the canal's cross-section, posterior offset from the arc, 1.5 mm
        # behind the most posterior body or disc.
        self._canal_offset = max(self._body_semi[:, 0].max(), self._disc_semi[:, 0].max()) + 1.5 + self._canal_radius

        # Place the spine: a few degrees about each world axis, its middle at a random point.
        self._rotation = (_rotation(_Z, rng.uniform(-4.0, 4.0)) @ _rotation(_Y, rng.uniform(-3.0, 3.0))
                          @ _rotation(_X, rng.uniform(-3.0, 3.0)))
        middle = np.array([rng.uniform(-15, 15), rng.uniform(-10, 30), rng.uniform(-60, 60)])
        self._translation = middle - self._rotation @ self._arc_point(self._length / 2)

        self.discs: list[DiscTruth] = [self._disc_truth(i) for i in range(n)]

    # ---- spine-frame geometry -------------------------------------------------------

    def _theta(self, s):
        """Tangent angle from the spine's superior axis towards anterior at arc length s."""
        return self._theta0 - s / self._radius

    def _arc_point(self, s):
        """The centreline point at arc length s (closed form of the circular arc)."""
        theta = self._theta(s)
        r = self._radius
        return np.array([0.0, r * (math.cos(self._theta0) - math.cos(theta)),
                         r * (math.sin(self._theta0) - math.sin(theta))])

    def _tilted_frame(self, s, coronal):
        """Rows (superior, posterior, left) at arc length s, turned about posterior by
        ``coronal`` radians. (left x posterior = superior: right-handed.)"""
        theta = self._theta(s)
        tangent = np.array([0.0, -math.sin(theta), math.cos(theta)])
        posterior = np.array([0.0, math.cos(theta), math.sin(theta)])
        superior = math.cos(coronal) * tangent + math.sin(coronal) * _X
        left = math.cos(coronal) * _X - math.sin(coronal) * tangent
        return np.array([superior, posterior, left])

    def _arc_coordinates(self, q):
        """(s, w) of spine-frame points: arc length of their radial projection on the
        centreline, and their posterior offset from it (the arc's centre of curvature
        lies posterior, at radius R)."""
        centre_y = self._radius * math.cos(self._theta0)
        centre_z = self._radius * math.sin(self._theta0)
        dy, dz = q[:, 1] - centre_y, q[:, 2] - centre_z
        theta = np.arctan2(-dz, -dy)
        return self._radius * (self._theta0 - theta), self._radius - np.hypot(dy, dz)

    def _disc_truth(self, i):
        superior, _, _ = self._disc_axes[i]
        normal = _unit(-(self._rotation @ superior))
        patient_right = -_X
        right = _unit(patient_right - (patient_right @ normal) * normal)
        return DiscTruth(
            label=DISC_LABEL_OFFSET + 1 + i,
            centre=_frozen(self._rotation @ self._disc_centre[i] + self._translation),
            normal=_frozen(normal), posterior=_frozen(np.cross(normal, right)), right=_frozen(right))

    def _posterior_element_boxes(self, i):
        """Boxes (along superior, along posterior, |left| ranges) in vertebra i's frame:
        pedicles either side of the canal, the lamina behind it, the spinous process."""
        half = self._vertebra_half[i]
        body_back = self._body_semi[i, 0]
        canal_back = self._canal_offset + self._canal_radius
        beside_canal = (self._canal_radius + 0.5, self._canal_radius + 6.0)
        return [
            ((-0.4 * half, 0.5 * half), (body_back - 4.0, canal_back), beside_canal),
            ((-0.4 * half, 0.5 * half), (canal_back, canal_back + 5.0), (0.0, beside_canal[1])),
            ((-0.6 * half, 0.3 * half), (canal_back, canal_back + 28.0), (0.0, 3.5)),
        ]

    # ---- classification -------------------------------------------------------------

    def _classify(self, points):
        """(labels int32, tissue uint8) at world points. Structures are painted from the
        lowest priority to the highest, so discs overwrite everything."""
        q = (_as_points(points) - self._translation) @ self._rotation
        s, w = self._arc_coordinates(q)
        labels = np.zeros(len(q), dtype=np.int32)
        tissue = np.zeros(len(q), dtype=np.uint8)
        self._paint_sacrum(q, s, tissue)
        for i in range(self.num_vertebrae):
            self._paint_posterior_elements(i, q, s, labels, tissue)
        self._paint_canal(q, s, w, labels, tissue)
        for i in range(self.num_vertebrae):
            self._paint_body(i, q, s, labels, tissue)
        for i in range(self.num_vertebrae):
            self._paint_disc(i, q, s, labels, tissue)
        return labels, tissue

    @staticmethod
    def _near(s, lo, hi):
        """Indices of points whose arc length lies in [lo, hi]: a cheap, deliberately
        generous prefilter; the exact tests follow on these points only."""
        return np.flatnonzero((s >= lo) & (s <= hi))

    @staticmethod
    def _in_frame(q, centre, axes):
        """Coordinates (superior, posterior, left) of points q in a frame."""
        return ((q - centre) @ axes.T).T

    def _above_disc_top(self, i, q):
        return (q - self._disc_centre[i]) @ self._disc_axes[i, 0] > self._disc_half[i]

    def _below_disc_bottom(self, i, q):
        return (q - self._disc_centre[i]) @ self._disc_axes[i, 0] < -self._disc_half[i]

    def _paint_disc(self, i, q, s, labels, tissue):
        # Coronal tilt and curvature move a disc point at most ~8 mm in s from its centre.
        idx = self._near(s, self._disc_s[i] - self._disc_half[i] - 8, self._disc_s[i] + self._disc_half[i] + 8)
        along, ap, lr = self._in_frame(q[idx], self._disc_centre[i], self._disc_axes[i])
        semi_ap, semi_lr = self._disc_semi[i]
        half = self._disc_half[i]
        inside = (np.abs(along) <= half) & ((ap / semi_ap) ** 2 + (lr / semi_lr) ** 2 <= 1)
        # The nucleus: an ellipsoid in the disc's middle, a little posterior.
        nucleus = inside & (((ap - 0.1 * semi_ap) / (0.55 * semi_ap)) ** 2 + (lr / (0.6 * semi_lr)) ** 2
                            + (along / (0.6 * half)) ** 2 <= 1)
        labels[idx[inside]] = DISC_LABEL_OFFSET + 1 + i
        tissue[idx[inside]] = _ANNULUS
        tissue[idx[nucleus]] = _NUCLEUS

    def _paint_body(self, i, q, s, labels, tissue):
        top_s = self._disc_s[i + 1] if i + 1 < self.num_vertebrae else self._length
        idx = self._near(s, self._disc_s[i] - 10, top_s + 10)
        sub = q[idx]
        _, ap, lr = self._in_frame(sub, self._vertebra_centre[i], self._vertebra_axes[i])
        semi_ap, semi_lr = self._body_semi[i]
        if i + 1 < self.num_vertebrae:
            below_top = self._below_disc_bottom(i + 1, sub)
        else:
            below_top = (sub - self._top_point) @ self._top_tangent < 0
        inside = self._above_disc_top(i, sub) & below_top & ((ap / semi_ap) ** 2 + (lr / semi_lr) ** 2 <= 1)
        labels[idx[inside]] = i + 1
        tissue[idx[inside]] = _BODY

    def _paint_posterior_elements(self, i, q, s, labels, tissue):
        reach = self._vertebra_half[i] + 15
        idx = self._near(s, self._vertebra_s[i] - reach, self._vertebra_s[i] + reach)
        along, ap, lr = self._in_frame(q[idx], self._vertebra_centre[i], self._vertebra_axes[i])
        inside = np.zeros(len(idx), dtype=bool)
        for (a0, a1), (p0, p1), (l0, l1) in self._posterior_element_boxes(i):
            inside |= (along >= a0) & (along <= a1) & (ap >= p0) & (ap <= p1) & (np.abs(lr) >= l0) & (np.abs(lr) <= l1)
        labels[idx[inside]] = i + 1
        tissue[idx[inside]] = _POSTERIOR

    def _paint_canal(self, q, s, w, labels, tissue):
        inside = ((s >= self._sacrum_bottom_s) & (s <= self._length)
                  & ((w - self._canal_offset) ** 2 + q[:, 0] ** 2 <= self._canal_radius ** 2))
        labels[inside] = CANAL_LABEL
        tissue[inside] = _CANAL

    def _paint_sacrum(self, q, s, tissue):
        # Unlabelled (SPIDER has no sacrum class): bone below disc 201, in the image only.
        idx = self._near(s, self._sacrum_bottom_s, self._disc_s[0] + 10)
        sub = q[idx]
        _, ap, lr = self._in_frame(sub, self._sacrum_centre, self._sacrum_axes)
        semi_ap, semi_lr = self._sacrum_semi
        inside = (self._below_disc_bottom(0, sub) & (s[idx] >= self._sacrum_bottom_s)
                  & ((ap / semi_ap) ** 2 + (lr / semi_lr) ** 2 <= 1))
        tissue[idx[inside]] = _SACRUM

    # ---- public ---------------------------------------------------------------------

    def labels_at(self, points: np.ndarray) -> np.ndarray:
        """SPIDER mask labels (int32) at (N, 3) LPS points."""
        return self._classify(points)[0]

    def intensity_at(self, points: np.ndarray, sequence: str, grades: dict[int, int] | None = None) -> np.ndarray:
        """Noise-free intensities (float64) at (N, 3) LPS points for ``sequence`` ("t1",
        "t2", "t2_SPACE"). ``grades`` maps disc labels to Pfirrmann grades 1..5 (discs not
        in it are drawn as grade 1); on T2 the nucleus darkens with the grade."""
        return self._sample(points, sequence, grades)[1]

    def _sample(self, points, sequence, grades=None):
        """(labels, intensities) from one classification."""
        if sequence not in _TISSUE_INTENSITY:
            raise ValueError(f"sequence must be one of {SEQUENCES}, got {sequence!r}")
        labels, tissue = self._classify(points)
        intensity = np.asarray(_TISSUE_INTENSITY[sequence])[tissue]
        if sequence in _NUCLEUS_SCALE:
            brightness = np.zeros(DISC_LABEL_OFFSET + self.num_vertebrae + 1)
            for disc in self.discs:
                grade = int((grades or {}).get(disc.label, _DEFAULT_GRADE))
                if grade not in _NUCLEUS_T2:
                    raise ValueError(f"Pfirrmann grade of disc {disc.label} must be 1..5, got {grade}")
                brightness[disc.label] = _NUCLEUS_T2[grade] * _NUCLEUS_SCALE[sequence]
            nucleus = tissue == _NUCLEUS
            intensity[nucleus] = brightness[labels[nucleus]]
        return labels, intensity

    def canal_centre(self, disc_label: int) -> np.ndarray:
        """LPS point on the canal tube's centreline at disc ``disc_label``'s level: the
        centreline point nearest the disc centre. The canal is concentric with the arc, so
        it lies on the disc centre's radius, ``_canal_offset`` posterior of it, in the
        disc's mid-plane."""
        i = int(disc_label) - DISC_LABEL_OFFSET - 1
        if not 0 <= i < self.num_vertebrae:
            raise ValueError(f"no disc {disc_label} in a phantom of {self.num_vertebrae} vertebrae")
        s = self._disc_s[i]
        posterior = self._tilted_frame(s, 0.0)[1]
        return self._rotation @ (self._arc_point(s) + self._canal_offset * posterior) + self._translation

    def outline_points(self) -> np.ndarray:
        """World points whose convex hull holds every labelled voxel (box corners of each
        disc, body and posterior-element set) and the top of the sacrum."""
        local = []
        for i in range(self.num_vertebrae):
            half, (semi_ap, semi_lr) = self._disc_half[i], self._disc_semi[i]
            local += _box_corners(self._disc_centre[i], self._disc_axes[i], (-half, half),
                                  (-semi_ap, semi_ap), (-semi_lr, semi_lr))
            # The body's faces are the tilted disc faces: allow 5 mm beyond its half height.
            half, (semi_ap, semi_lr) = self._vertebra_half[i] + 5, self._body_semi[i]
            local += _box_corners(self._vertebra_centre[i], self._vertebra_axes[i], (-half, half),
                                  (-semi_ap, semi_ap), (-semi_lr, semi_lr))
            for along, ap, (_, lr) in self._posterior_element_boxes(i):
                local += _box_corners(self._vertebra_centre[i], self._vertebra_axes[i], along, ap, (-lr, lr))
        half, (semi_ap, semi_lr) = self._disc_half[0], self._disc_semi[0]
        local += _box_corners(self._disc_centre[0], self._disc_axes[0], (-half - 12, -half),
                              (-semi_ap, semi_ap), (-semi_lr, semi_lr))
        return np.array(local) @ self._rotation.T + self._translation


def _box_corners(centre, axes, along, ap, lr):
    return [centre + a * axes[0] + p * axes[1] + l * axes[2] for a in along for p in ap for l in lr]
