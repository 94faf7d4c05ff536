"""Synthetic lumbar-IVD cohort (SPEC §10): phantom volumes with known hidden severities.

``synthesize(out_dir, subjects=300, seed=0)`` writes a dataset folder in the format
the training application reads::

    out_dir/
      labels.csv         one row per volume: ivd_id, subject_id, level, sequence, centre,
                         then one integer-grade column per task (empty cell = missing)
      volumes/<ivd_id>_<sequence>.npy
                         float32, shape (H, W, D) = (rows, columns, sagittal slices)
      latent.csv         ivd_id, then the hidden continuous severity per task
                         (for evaluation only; training never reads it)
      cohort.json        generator parameters, centre parameters, conventions, counts
      README.txt         the same in words

Conventions
-----------
* Volumes: axis 0 = rows, superior (0) to inferior; axis 1 = columns, anterior (0) to
  posterior; axis 2 = sagittal slices, from the patient's LEFT (d = 0) to the RIGHT
  (d = D - 1). The left neural foramen is drawn only in slices d < (D - 1) / 2, the right
  one only in slices d > (D - 1) / 2, the spinal canal (and a herniation) in the middle
  slices. Everything else is left-right symmetric, so reversing the slice axis
  (``vol[:, :, ::-1]``, the flip of SPEC §4/§5) gives exactly the phantom of the same
  disc with ``ForaminalStenosisLeft`` and ``ForaminalStenosisRight`` exchanged.
* Intensities: every volume is z-scored on its own (mean 0, standard deviation 1 over
  all voxels, computed in float64, stored as float32).
* Levels: ``T12/L1``, ``L1/L2``, ``L2/L3``, ``L3/L4``, ``L4/L5``, ``L5/S1`` (the ``level``
  column); a subject has a contiguous run of 1–6 of them, most often ending at L5/S1.
  IDs: subject ``S0001``, IVD ``S0001_L4-L5``, volume file ``S0001_L4-L5_T2.npy``.
* Sequences: every IVD has a T1 and a T2 volume (two rows with the same ``ivd_id``).
  Both rows carry the IVD's grades; hiding Pfirrmann and DiscNarrowing on T1 is the
  dataset's job (the task table's ``masked_for``).
* Centres ``C1``, ``C2``, ...: each has its own contrast (a gamma per sequence), Rician
  noise level, in-plane blur (resolution), bias-field strength and slice thickness
  (partial-volume mixing across slices). C1 is the largest.

The hidden severity
-------------------
For each IVD and task a Gaussian ``z`` is drawn from shared factors (subject, disc,
a "posterior complex" factor shared by canal, foramina, herniation and posterior
bulging, and a bilateral foraminal factor) plus task-specific noise, with a small
shift by level (lower levels are more degenerated). ``z`` is mapped monotonically to
the latent severity ``s`` on the task's grade scale: ``s`` lies in [0, K - 1], and the
grade boundaries are at ``s = k + 0.5`` (grade 0 = [0, 0.5), grade k = [k - 0.5, k + 0.5),
the top grade = [K - 1.5, K - 1]); within each grade ``s`` is uniform, and the grade
proportions are each task's target (``TASK_MODELS``: 65–92% normal, the rest
decreasing geometrically with grade). The recorded grade is the rater's reading: the
grade of ``s(z + e)``, ``e ~ N(0, 0.2)``. The rater thus errs only near a boundary
(about one grade in seven differs from the grade of ``s``), by one grade, and without
changing the expected proportions (the noise is applied where ``z`` is Gaussian, so
the flows across a boundary balance). About 3% of the (IVD, task) grades are then
removed at random (missing in both rows of the IVD). ``latent.csv`` holds ``s``.

The phantom
-----------
A sagittal vertebra–disc–vertebra stack, drawn with smooth masks (numpy, vectorised)
on three 2-D images (midline, left lateral, right lateral) that are blended across the
slices. Each task's fraction ``x = s / (K - 1)`` in [0, 1] acts as follows:

====================== ===============================================================
Pfirrmann              nucleus signal: on T2 bright (0.92) when normal, dark (0.28)
                       at the top grade; on T1 it darkens slightly
DiscNarrowing          disc height, down to 45% at the top grade
CentralCanalStenosis   the canal's posterior wall (ligamentum flavum) moves forward at
                       the disc level: canal width down to 40% (middle slices)
Spondylolisthesis      the upper vertebra (and the upper half of the disc) slides
                       anteriorly, by up to 12% of the width
UpperEndplateDefect    a notch (T1 dark, T2 bright) into the upper vertebra's endplate
LowerEndplateDefect    the same into the lower vertebra's endplate
ForaminalStenosisLeft  the left foramen (bright fat, T1 and T2) shrinks to 40% (left slices)
ForaminalStenosisRight the right foramen, in the right slices
Herniation             a focal posterior protrusion into the canal (middle slices)
AnteriorBulging        a broad anterior bulge of the disc margin (all slices)
PosteriorBulging       a broad posterior bulge of the disc margin (all slices)
====================== ===============================================================

Determinism: subject ``i`` is generated from its own ``numpy.random.SeedSequence(seed,
spawn_key=(1, i))`` and the centres from ``spawn_key=(0,)``, so the output depends on
the seed (and the other arguments) but not on ``workers``, and the first N subjects
of a larger cohort equal a cohort of N subjects with the same seed and centres.

Parallel runs use worker processes started with "spawn": in a script, call
``synthesize`` under ``if __name__ == "__main__":``.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import os
import pathlib
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .checkpoint import atomic_write, atomic_write_text
from .tasks import Task, TaskTable

__all__ = [
    "synthesize",
    "phantom",
    "Anatomy",
    "Centre",
    "TaskModel",
    "TASK_MODELS",
    "LEVELS",
    "SEQUENCES",
    "DEFAULT_SHAPE",
    "GENERATOR",
    "VERSION",
]

GENERATOR = "spinerank.synth"
#: Bumped whenever the same arguments would produce different files.
VERSION = 1
DEFAULT_SHAPE = (48, 80, 10)
LEVELS = ("T12/L1", "L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")
SEQUENCES = ("T1", "T2")
#: standard deviation of the rater's reading error, in units of the Gaussian z
RATER_SIGMA = 0.2
#: probability that one (IVD, task) grade is missing
MISSING_RATE = 0.03
#: smallest rows/columns the phantom is drawn at
MIN_HW = 16

# How many levels a subject has (1..6), and the level shift of the latent (T12/L1..L5/S1).
_NUM_LEVELS_P = (0.04, 0.04, 0.07, 0.10, 0.55, 0.20)
_LEVEL_SHIFT = (-0.25, -0.20, -0.10, 0.0, 0.20, 0.25)


@dataclasses.dataclass(frozen=True)
class TaskModel:
    """How the hidden severity of one task is drawn."""

    #: target proportion of grade 0 (after rater noise); higher grades decrease geometrically
    normal: float
    #: loadings on the (subject, disc, posterior complex, bilateral foramen) factors
    loadings: tuple[float, float, float, float]
    #: multiplier of the level shift
    level: float = 1.0
    #: ratio between the proportions of consecutive abnormal grades
    ratio: float = 0.55

    def grade_distribution(self, num_grades: int) -> np.ndarray:
        w = self.ratio ** np.arange(num_grades - 1)
        return np.concatenate([[self.normal], (1.0 - self.normal) * w / w.sum()])


TASK_MODELS: dict[str, TaskModel] = {
    "Pfirrmann": TaskModel(0.65, (0.45, 0.60, 0.00, 0.00)),
    "DiscNarrowing": TaskModel(0.70, (0.40, 0.60, 0.00, 0.00)),
    "CentralCanalStenosis": TaskModel(0.85, (0.35, 0.30, 0.50, 0.00)),
    "Spondylolisthesis": TaskModel(0.92, (0.30, 0.30, 0.00, 0.00), level=1.5),
    "UpperEndplateDefect": TaskModel(0.80, (0.30, 0.45, 0.00, 0.00)),
    "LowerEndplateDefect": TaskModel(0.82, (0.30, 0.45, 0.00, 0.00)),
    "ForaminalStenosisLeft": TaskModel(0.78, (0.35, 0.30, 0.30, 0.50)),
    "ForaminalStenosisRight": TaskModel(0.78, (0.35, 0.30, 0.30, 0.50)),
    "Herniation": TaskModel(0.86, (0.30, 0.40, 0.45, 0.00)),
    "AnteriorBulging": TaskModel(0.72, (0.45, 0.45, 0.00, 0.00)),
    "PosteriorBulging": TaskModel(0.68, (0.35, 0.40, 0.50, 0.00)),
}
_KNOWN = tuple(TASK_MODELS)

# Tissue intensities (T1, T2) before contrast, blur, bias and noise.
_TISSUE = {
    "soft": (0.52, 0.40),
    "marrow": (0.72, 0.48),
    "annulus": (0.30, 0.26),
    "notch": (0.18, 0.75),
    "csf": (0.10, 0.98),
    "posterior": (0.45, 0.30),
    "pedicle": (0.58, 0.40),
    "fat": (0.90, 0.66),
}
# Nucleus (T1, T2) at x = 0 and its change at x = 1 (Pfirrmann).
_NUCLEUS = ((0.36, -0.08), (0.92, -0.64))


@dataclasses.dataclass(frozen=True)
class Anatomy:
    """The phantom's geometry, as fractions of the rows (H) or columns (W)."""

    yc: float = 0.50          # disc centre row / H
    disc_h: float = 0.20      # normal disc height / H
    xa: float = 0.14          # anterior wall of the vertebral bodies / W
    depth: float = 0.40       # antero-posterior depth of the vertebral bodies / W
    canal: float = 0.12       # normal canal width / W
    nucleus: float = 0.50     # nucleus centre, fraction of the way from xa to the posterior wall
    notch_u: float = 0.50     # upper notch centre, same
    notch_l: float = 0.50     # lower notch centre, same
    foramen_y: float = -0.05  # foramen centre row offset from yc / H
    foramen_x: float = 0.10   # foramen centre column offset from the posterior wall / W
    foramen_ry: float = 0.17  # normal foramen half-height / H
    foramen_rx: float = 0.05  # normal foramen half-width / W


@dataclasses.dataclass(frozen=True)
class Centre:
    """Acquisition characteristics of one centre."""

    name: str = "C0"
    gamma_t1: float = 1.0     # contrast: intensity ** gamma
    gamma_t2: float = 1.0
    noise: float = 0.0        # Rician noise sigma (tissue intensities are in [0, 1])
    blur: float = 0.5         # in-plane Gaussian blur sigma, in pixels of the default shape
    bias: float = 0.0         # amplitude of the linear bias field
    slab: float = 0.30        # where the lateral slices start, as |slice coordinate|
    slab_width: float = 0.40  # width of the midline-to-lateral transition


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _phi(z):
    """Standard normal CDF, elementwise."""
    return 0.5 * (1.0 + np.vectorize(math.erf, otypes=[float])(np.asarray(z, float) / math.sqrt(2.0)))


# ----------------------------------------------------------------------------- latent


def _band_edges(K: int) -> list[tuple[float, float]]:
    """The range of s for each grade before the rater: [0, .5], [k-.5, k+.5], [K-1.5, K-1]."""
    return [(max(0.0, k - 0.5), min(K - 1.0, k + 0.5)) for k in range(K)]


@functools.lru_cache(maxsize=None)
def _task_bands(name: str, K: int) -> np.ndarray:
    """Grade proportions of task ``name`` with K grades (cached)."""
    q = TASK_MODELS[name].grade_distribution(K)
    q.flags.writeable = False
    return q


def _latent_from_z(z: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Monotone map of standard-normal z to s in [0, K-1], uniform within each grade band."""
    K = len(q)
    u = np.clip(_phi(z), 1e-12, 1 - 1e-12)
    cum = np.concatenate([[0.0], np.cumsum(q)])
    cum[-1] = 1.0
    k = np.clip(np.searchsorted(cum, u, side="right") - 1, 0, K - 1)
    frac = np.clip((u - cum[k]) / q[k], 0.0, 1.0)
    edges = np.array(_band_edges(K))
    return edges[k, 0] + frac * (edges[k, 1] - edges[k, 0])


# ----------------------------------------------------------------------------- phantom


def _blur1d(img: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    if sigma < 0.05:
        return img
    r = max(1, int(math.ceil(3.0 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    n = img.shape[axis]
    pad = [(0, 0)] * img.ndim
    pad[axis] = (r, r)
    p = np.pad(img, pad, mode="edge")
    out = np.zeros_like(img)
    for i, w in enumerate(k):
        sl = [slice(None)] * img.ndim
        sl[axis] = slice(i, i + n)
        out += w * p[tuple(sl)]
    return out


def _images(x: Mapping[str, float], sequence: str, H: int, W: int, anat: Anatomy,
            dy: float = 0.0, dx: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The midline, left-lateral and right-lateral 2-D images (H, W), intensities in [0, 1]."""
    j = SEQUENCES.index(sequence)
    tis = {k: v[j] for k, v in _TISSUE.items()}
    g = lambda name: float(np.clip(x.get(name, 0.0), 0.0, 1.0))  # noqa: E731
    soft = 0.6  # edge width, pixels

    def S(t):
        return 0.5 * (1.0 + np.tanh(t / soft))

    Y = (np.arange(H, dtype=np.float64) + 0.5)[:, None]
    X = (np.arange(W, dtype=np.float64) + 0.5)[None, :]

    yc = anat.yc * H + dy
    hd0 = anat.disc_h * H
    hd = hd0 * (1.0 - 0.55 * g("DiscNarrowing"))
    top, bot = yc - hd / 2, yc + hd / 2
    # Spondylolisthesis: everything above the disc slides anteriorly (to smaller columns).
    slip = 0.12 * W * g("Spondylolisthesis")
    shift = slip * (1.0 - _smoothstep((Y - top) / hd))
    Xe = X + dx + shift  # (H, W): the column in the frame of the lower vertebra
    xa = anat.xa * W
    xp = xa + anat.depth * W

    # Disc margins: bulges over the disc rows, a focal herniation in the midline.
    prof = np.sqrt(np.clip(1.0 - ((Y - yc) / (hd / 2 + 0.5)) ** 2, 0.0, 1.0))
    a = xa - 0.07 * W * g("AnteriorBulging") * prof
    p_lat = xp + 0.05 * W * g("PosteriorBulging") * prof
    p_mid = p_lat + 0.14 * W * g("Herniation") * np.exp(-(((Y - yc) / (0.3 * hd + 0.5)) ** 2))

    # Rows of the anterior column: upper body | upper notch | disc | lower notch | lower body.
    def bump(c, w):
        return np.clip(1.0 - ((Xe - c) / w) ** 2, 0.0, 1.0)

    xu = xa + anat.notch_u * (xp - xa)
    xl = xa + anat.notch_l * (xp - xa)
    b1 = top - 0.12 * H * g("UpperEndplateDefect") * bump(xu, (0.04 + 0.06 * g("UpperEndplateDefect")) * W)
    b4 = bot + 0.12 * H * g("LowerEndplateDefect") * bump(xl, (0.04 + 0.06 * g("LowerEndplateDefect")) * W)
    s1, s2, s3, s4 = S(b1 - Y), S(top - Y), S(bot - Y), S(b4 - Y)
    xn = xa + anat.nucleus * (xp - xa)
    rho = np.sqrt(((Y - yc) / max(0.3 * hd, 0.6)) ** 2 + ((Xe - xn) / (0.13 * W)) ** 2)
    nucleus = S(max(0.3 * hd, 0.6) * (1.0 - rho))
    pf = g("Pfirrmann")
    nuc_val = _NUCLEUS[j][0] + _NUCLEUS[j][1] * pf
    disc = tis["annulus"] + (nuc_val - tis["annulus"]) * nucleus
    column = tis["marrow"] * (s1 + 1.0 - s4) + tis["notch"] * (s2 - s1 + s4 - s3) + disc * (s3 - s2)

    # Posterior region, midline: canal (posterior wall forward at the disc level), then arch.
    q = xp + anat.canal * W * (1.0 - 0.6 * g("CentralCanalStenosis")
                               * np.exp(-(((Y - yc) / (0.7 * hd0)) ** 2)))
    inside = S(q - Xe)
    post_mid = tis["csf"] * inside + tis["posterior"] * (1.0 - inside)

    # Posterior region, lateral: pedicles and the foramen (fat) between them.
    xb = xp + 0.22 * W
    arch = tis["pedicle"] * S(xb - Xe) + tis["posterior"] * S(Xe - xb)
    yf, xf = yc + anat.foramen_y * H, xp + anat.foramen_x * W
    # The foramen moves with the slip at its centre row (rigidly, not sheared).
    Xf = X + dx + slip * (1.0 - _smoothstep((yf - top) / hd))

    def lateral(sev):
        f = 1.0 - 0.6 * sev
        ry, rx = anat.foramen_ry * H * f, anat.foramen_rx * W * f
        r = np.sqrt(((Y - yf) / ry) ** 2 + ((Xf - xf) / rx) ** 2)
        fat = S(min(ry, rx) * (1.0 - r))
        return tis["fat"] * fat + arch * (1.0 - fat)

    def compose(p, post):
        front = S(Xe - a)
        col = front * S(p - Xe)
        back = front * S(Xe - p)
        return tis["soft"] * (1.0 - front) + column * col + post * back

    mid = compose(p_mid, post_mid)
    left = compose(p_lat, lateral(g("ForaminalStenosisLeft")))
    right = compose(p_lat, lateral(g("ForaminalStenosisRight")))
    return mid, left, right


def _slice_weights(D: int, centre: Centre) -> np.ndarray:
    """(3, D) weights of the midline, left and right images per slice (left = low d)."""
    z = (np.arange(D) - (D - 1) / 2) / ((D - 1) / 2)
    lat = _smoothstep((np.abs(z) - centre.slab) / centre.slab_width)
    return np.stack([1.0 - lat, np.where(z < 0, lat, 0.0), np.where(z > 0, lat, 0.0)])


def _render(x, sequence, shape, anat, centre, rng=None, jitter=(0.0, 0.0), bias=(0.0, 0.0),
            normalise=True) -> np.ndarray:
    H, W, D = shape
    imgs = _images(x, sequence, H, W, anat, *jitter)
    gamma = centre.gamma_t1 if sequence == "T1" else centre.gamma_t2
    Y = ((np.arange(H) + 0.5) / H - 0.5)[:, None]
    X = ((np.arange(W) + 0.5) / W - 0.5)[None, :]
    field = 1.0 + bias[0] * Y + bias[1] * X
    out = []
    for im in imgs:
        im = np.clip(im, 0.0, 1.0) ** gamma
        im = _blur1d(_blur1d(im, centre.blur * H / DEFAULT_SHAPE[0], 0), centre.blur * W / DEFAULT_SHAPE[1], 1)
        out.append((im * field).astype(np.float32))
    w = _slice_weights(D, centre).astype(np.float32)
    vol = out[0][:, :, None] * w[0]
    vol += out[1][:, :, None] * w[1]
    vol += out[2][:, :, None] * w[2]
    if rng is not None and centre.noise > 0:
        # Rician: the magnitude of (signal + n0) + i n1.
        n = rng.standard_normal((2, H, W, D), dtype=np.float32)
        n *= np.float32(centre.noise)
        n[0] += vol
        np.square(n, out=n)
        np.add(n[0], n[1], out=vol)
        np.sqrt(vol, out=vol)
    if normalise:
        mean = float(vol.mean(dtype=np.float64))
        vol -= np.float32(mean)
        std = math.sqrt(float(np.square(vol).mean(dtype=np.float64)))
        vol *= np.float32(1.0 / max(std, 1e-8))
    return np.ascontiguousarray(vol, dtype=np.float32)


def phantom(severity: Mapping[str, float] | None = None, sequence: str = "T2",
            shape: Sequence[int] = DEFAULT_SHAPE, *, anatomy: Anatomy | None = None,
            centre: Centre | None = None, rng: np.random.Generator | None = None,
            normalise: bool = True) -> np.ndarray:
    """One phantom volume (H, W, D) float32 for given task severities.

    ``severity`` maps task names to fractions in [0, 1] (``s / (K - 1)``; missing = 0).
    Without ``anatomy``/``centre`` the defaults are used (a neutral centre: no contrast
    change, light blur, no bias, no noise). Rician noise is added only when ``rng`` is
    given and ``centre.noise`` > 0. ``normalise=False`` returns the raw intensities
    (about 0..1) instead of the z-scored volume that ``synthesize`` stores.
    """
    shape = _check_shape(shape)
    if sequence not in SEQUENCES:
        raise ValueError(f"sequence must be one of {SEQUENCES}, got {sequence!r}")
    severity = dict(severity or {})
    unknown = sorted(set(severity) - set(_KNOWN))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; the phantom draws {list(_KNOWN)}")
    return _render(severity, sequence, shape, anatomy or Anatomy(), centre or Centre(), rng=rng,
                   normalise=normalise)


# ----------------------------------------------------------------------------- cohort


def _draw_centres(seed: int, n: int) -> list[Centre]:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    out = []
    for c in range(n):
        gt1, gt2 = rng.uniform(0.7, 1.4, size=2)
        out.append(Centre(
            name=f"C{c + 1}",
            gamma_t1=round(float(gt1), 4), gamma_t2=round(float(gt2), 4),
            noise=round(float(rng.uniform(0.015, 0.06)), 4),
            blur=round(float(rng.uniform(0.3, 1.3)), 4),
            bias=round(float(rng.uniform(0.0, 0.3)), 4),
            slab=round(float(rng.uniform(0.2, 0.35)), 4),
            slab_width=round(float(rng.uniform(0.3, 0.5)), 4),
        ))
    return out


def _centre_weights(n: int) -> np.ndarray:
    w = 1.0 / (1.0 + 0.5 * np.arange(n))
    return w / w.sum()


@dataclasses.dataclass(frozen=True)
class _Config:
    out_dir: str
    seed: int
    shape: tuple[int, int, int]
    table: TaskTable
    centres: tuple[Centre, ...]


def _subject_id(i: int, subjects: int) -> str:
    return f"S{i + 1:0{max(4, len(str(subjects)))}d}"


def _make_subject(cfg: _Config, i: int, subjects: int):
    """Draw subject i, write its volumes; return its label rows and latent rows."""
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(1, i)))
    T = len(_KNOWN)
    table = cfg.table
    sid = _subject_id(i, subjects)
    centre = cfg.centres[int(rng.choice(len(cfg.centres), p=_centre_weights(len(cfg.centres))))]
    n = int(rng.choice(6, p=_NUM_LEVELS_P)) + 1
    end = 6 if (n == 6 or rng.random() < 0.75) else int(rng.integers(n, 6))
    first = end - n
    subject_factor = rng.standard_normal()
    base = Anatomy(
        disc_h=0.20 * rng.uniform(0.94, 1.06), depth=0.40 * rng.uniform(0.95, 1.05),
        canal=0.12 * rng.uniform(0.92, 1.08), foramen_ry=0.17 * rng.uniform(0.92, 1.08),
        foramen_rx=0.05 * rng.uniform(0.9, 1.1),
    )
    load = np.array([TASK_MODELS[t].loadings for t in _KNOWN])  # (T, 4)
    resid = np.sqrt(1.0 - (load ** 2).sum(1))
    lvl_load = np.array([TASK_MODELS[t].level for t in _KNOWN])
    vol_dir = pathlib.Path(cfg.out_dir) / "volumes"

    label_rows, latent_rows = [], []
    for li in range(first, end):
        level = LEVELS[li]
        ivd = f"{sid}_{level.replace('/', '-')}"
        factors = np.concatenate([[subject_factor], rng.standard_normal(3)])
        # (no BLAS: an elementwise product and a short sum give the same bits everywhere)
        z = (load * factors).sum(1) + resid * rng.standard_normal(T) + lvl_load * _LEVEL_SHIFT[li]
        rater = rng.normal(0.0, RATER_SIGMA, size=T)
        missing = rng.random(T) < MISSING_RATE
        anat = dataclasses.replace(
            base, disc_h=base.disc_h * rng.uniform(0.97, 1.03), nucleus=rng.uniform(0.42, 0.58),
            notch_u=rng.uniform(0.3, 0.7), notch_l=rng.uniform(0.3, 0.7))
        s_row, g_row, x = [], [], {}
        for task in table.tasks:
            t = _KNOWN.index(task.name)
            K = task.num_grades
            q = _task_bands(task.name, K)
            s = float(_latent_from_z(np.array([z[t]]), q)[0])
            # The rater reads a slightly perturbed severity: the grade of z + e, at most
            # one grade away from the grade of s.
            true = min(math.floor(s + 0.5), K - 1)
            read = math.floor(_latent_from_z(np.array([z[t] + rater[t]]), q)[0] + 0.5)
            grade = int(np.clip(read, max(0, true - 1), min(K - 1, true + 1)))
            s_row.append(f"{s:.6f}")
            g_row.append("" if missing[t] else str(grade))
            x[task.name] = s / (K - 1)
        for seq in SEQUENCES:
            jitter = (rng.uniform(-0.03, 0.03) * cfg.shape[0], rng.uniform(-0.02, 0.02) * cfg.shape[1])
            bias = tuple(rng.uniform(-centre.bias, centre.bias, size=2))
            vol = _render(x, seq, cfg.shape, anat, centre, rng=rng, jitter=jitter, bias=bias)
            path = vol_dir / f"{ivd}_{seq}.npy"
            atomic_write(path, lambda f, vol=vol: np.save(f, vol), durable=False)
            label_rows.append([ivd, sid, level, seq, centre.name] + g_row)
        latent_rows.append([ivd] + s_row)
    return label_rows, latent_rows


def _make_chunk(cfg: _Config, indices: Sequence[int], subjects: int):
    return [_make_subject(cfg, i, subjects) for i in indices]


# ----------------------------------------------------------------------------- arguments


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_shape(shape) -> tuple[int, int, int]:
    try:
        dims = tuple(shape)
    except TypeError:
        raise ValueError(f"shape must be 3 positive ints (H, W, D), got {shape!r}") from None
    if len(dims) != 3 or not all(_is_int(v) and v > 0 for v in dims):
        raise ValueError(f"shape must be 3 positive ints (H, W, D), got {shape!r}")
    H, W, D = (int(v) for v in dims)
    if H < MIN_HW or W < MIN_HW:
        raise ValueError(f"shape: H and W must be >= {MIN_HW} for the phantom to be drawn, got {shape!r}")
    if D < 3:
        raise ValueError(f"shape: D (sagittal slices) must be >= 3 (left, middle and right slices), got {shape!r}")
    return H, W, D


def _check_tasks(tasks) -> TaskTable:
    if tasks is None:
        table = TaskTable()
    elif isinstance(tasks, TaskTable):
        table = tasks
    else:
        entries = list(tasks)
        if all(isinstance(e, Task) for e in entries):
            table = TaskTable(tuple(entries))
        elif all(isinstance(e, Mapping) for e in entries):
            table = TaskTable.from_config(entries)
        else:
            raise ValueError("tasks must be a TaskTable, a sequence of Task, or a list of task dicts")
    unknown = [t.name for t in table.tasks if t.name not in TASK_MODELS]
    if unknown:
        raise ValueError(f"the synthetic cohort cannot draw task(s) {unknown}; it knows {list(_KNOWN)}")
    return table


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# ----------------------------------------------------------------------------- writing


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


_OWNED = ("labels.csv", "latent.csv", "cohort.json", "README.txt", "splits.csv")


def _prepare_out_dir(out: pathlib.Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {str(out)!r} exists and is not a directory")
    existing = [n for n in ("labels.csv", "volumes", "cohort.json") if (out / n).exists()]
    if existing:
        if not overwrite:
            raise FileExistsError(
                f"out_dir {str(out)!r} already holds a dataset ({', '.join(existing)}); "
                "pass overwrite=True to replace a synthetic cohort, or choose another folder")
        meta = out / "cohort.json"
        try:
            is_synth = json.loads(meta.read_text()).get("generator") == GENERATOR
        except (OSError, ValueError, AttributeError):
            is_synth = False
        if not is_synth:
            raise FileExistsError(
                f"refusing to overwrite {str(out)!r}: it has {', '.join(existing)} but no cohort.json "
                f"written by {GENERATOR}, so it may not be a synthetic cohort")
        # labels.csv goes first: from here on no labels.csv points at the old volumes.
        for name in _OWNED:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "volumes", ignore_errors=True)
    (out / "volumes").mkdir(parents=True, exist_ok=True)


_README = """Synthetic lumbar IVD cohort written by {generator} (version {version}).
Phantom images with known hidden severities; not real patients.

Parameters: subjects={subjects} seed={seed} shape(H, W, D)={shape} centres={centres}
Subjects {subjects}, IVDs {ivds}, volumes {volumes}.

labels.csv   one row per volume: ivd_id, subject_id, level, sequence (T1|T2), centre,
             then one column per task with the integer grade 0..K-1 (empty = missing).
             Both rows of an IVD carry its grades; Pfirrmann and DiscNarrowing are
             to be masked for T1 by the dataset (task table).
volumes/     <ivd_id>_<sequence>.npy, float32 (H, W, D) = (rows superior->inferior,
             columns anterior->posterior, sagittal slices patient LEFT (d=0) -> RIGHT).
             The left foramen is drawn in slices d < (D-1)/2, the right one in
             d > (D-1)/2; reversing the slice axis swaps the ForaminalStenosis labels.
             Each volume is z-scored (mean 0, std 1).
latent.csv   ivd_id, then the hidden continuous severity s per task on the grade scale:
             s in [0, K-1], grade boundaries at s = k + 0.5; the grades in labels.csv
             add rater noise near the boundaries. Never used for training.
cohort.json  all generator and centre parameters, conventions and counts.

Normal (grade 0) prevalence per task:
{prevalence}
"""


def synthesize(out_dir, subjects: int = 300, seed: int = 0, shape: Sequence[int] = DEFAULT_SHAPE,
               centres: int = 3, tasks=None, workers: int | None = None, progress: bool = True,
               *, overwrite: bool = False) -> dict:
    """Write a synthetic cohort to ``out_dir`` and return a summary dict.

    Arguments: ``subjects`` >= 1; ``seed`` >= 0; ``shape`` (H, W, D) with H, W >= 16 and
    D >= 3 (the paper's volumes are (192, 320, 15)); ``centres`` >= 1; ``tasks`` a
    ``TaskTable``, a sequence of ``Task`` or of task dicts (default: SPEC §2), every
    name one the phantom can draw; ``workers`` processes (default: the CPUs available,
    at most one per 8 subjects; 1 = in this process); ``progress`` shows a tqdm bar; ``overwrite`` replaces a
    cohort previously written by this generator (never another dataset).

    The summary holds ``subjects``, ``ivds``, ``volumes``, ``centres`` (subjects per
    centre), ``levels`` (IVDs per level), per task ``grade_counts``, ``prevalence``
    (proportion of each grade among the labelled IVDs), ``normal_prevalence`` and
    ``missing`` (IVDs without a grade), the arguments, and ``seconds``.

    Volumes are written first (each via a temporary file and a rename), then
    ``latent.csv``, ``cohort.json`` and ``README.txt``, and ``labels.csv`` last, so an
    interrupted run never leaves a ``labels.csv`` that names a missing volume.
    """
    t0 = time.perf_counter()
    if not _is_int(subjects) or subjects < 1:
        raise ValueError(f"subjects must be an int >= 1, got {subjects!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if not _is_int(centres) or centres < 1:
        raise ValueError(f"centres must be an int >= 1, got {centres!r}")
    if workers is not None and (not _is_int(workers) or workers < 1):
        raise ValueError(f"workers must be None or an int >= 1, got {workers!r}")
    shape = _check_shape(shape)
    table = _check_tasks(tasks)
    subjects, seed, centres = int(subjects), int(seed), int(centres)
    if out_dir is None or str(out_dir) == "":
        raise ValueError("out_dir must be a folder path")
    out = pathlib.Path(out_dir)
    _prepare_out_dir(out, overwrite)

    centre_list = _draw_centres(seed, centres)
    params = {
        "generator": GENERATOR, "version": VERSION, "subjects": subjects, "seed": seed,
        "shape": list(shape), "centres": centres, "tasks": table.to_config(),
    }
    # A marker first: an interrupted run leaves a folder that overwrite=True may replace.
    atomic_write_text(out / "cohort.json", json.dumps({**params, "complete": False}, indent=2) + "\n")

    cfg = _Config(str(out), seed, shape, table, tuple(centre_list))
    # Explicit workers are honoured (up to one per subject); the default skips the
    # process start-up cost for small cohorts.
    n_workers = min(workers, subjects) if workers else min(_default_workers(), max(1, subjects // 8))
    results: list = [None] * subjects
    bar = None
    if progress:
        try:
            from .progress import progress_bar
            bar = progress_bar(total=subjects, unit="subject", desc="synth")
        except ImportError:  # progress bars are a nicety, not a requirement
            bar = None
    try:
        if n_workers <= 1:
            for i in range(subjects):
                results[i] = _make_subject(cfg, i, subjects)
                if bar is not None:
                    bar.update(1)
        else:
            import concurrent.futures as cf
            import multiprocessing as mp

            size = max(1, min(32, math.ceil(subjects / (4 * n_workers))))
            chunks = [list(range(s, min(s + size, subjects))) for s in range(0, subjects, size)]
            with cf.ProcessPoolExecutor(n_workers, mp_context=mp.get_context("spawn")) as ex:
                futures = {ex.submit(_make_chunk, cfg, c, subjects): c for c in chunks}
                try:
                    for fut in cf.as_completed(futures):
                        for i, r in zip(futures[fut], fut.result()):
                            results[i] = r
                        if bar is not None:
                            bar.update(len(futures[fut]))
                except cf.process.BrokenProcessPool as e:
                    raise RuntimeError(
                        "a synth worker process died. Worker processes are started with 'spawn': "
                        "a script that calls synthesize must do so under `if __name__ == \"__main__\":` "
                        "(or pass workers=1)") from e
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
    finally:
        if bar is not None:
            bar.close()

    label_rows = [row for r in results for row in r[0]]
    latent_rows = [row for r in results for row in r[1]]
    names = table.names
    summary = _summarise(label_rows, latent_rows, table, centre_list)
    summary.update({"out_dir": str(out), "seed": seed, "shape": list(shape)})

    atomic_write_text(out / "latent.csv", _csv_text(["ivd_id"] + names, latent_rows))
    meta = {
        **params, "complete": True,
        "centre_parameters": [dataclasses.asdict(c) for c in centre_list],
        "task_models": {t.name: dataclasses.asdict(TASK_MODELS[t.name]) for t in table.tasks},
        "rater_sigma": RATER_SIGMA, "missing_rate": MISSING_RATE, "levels": list(LEVELS),
        "conventions": {
            "array": "(H, W, D) = (rows superior->inferior, columns anterior->posterior, "
                     "sagittal slices patient left (d=0) -> right)",
            "left_right": "left foramen in slices d < (D-1)/2, right foramen in d > (D-1)/2; "
                          "reversing the slice axis swaps ForaminalStenosisLeft/Right",
            "normalisation": "per volume z-score: mean 0, std 1 over all voxels; float32",
            "latent": "s in [0, K-1] on the grade scale; grade boundaries at s = k + 0.5 before rater noise",
            "rater": "grade of s(z + e), e ~ N(0, rater_sigma), z the standard-normal latent behind s",
        },
        "summary": {k: v for k, v in summary.items() if k not in ("out_dir", "seed", "shape")},
    }
    atomic_write_text(out / "cohort.json", json.dumps(meta, indent=2) + "\n")
    prevalence = "\n".join(f"  {n:24s} {summary['normal_prevalence'][n]:.3f}" for n in names)
    atomic_write_text(out / "README.txt", _README.format(
        generator=GENERATOR, version=VERSION, subjects=subjects, seed=seed, shape=tuple(shape),
        centres=centres, ivds=summary["ivds"], volumes=summary["volumes"],
        prevalence=prevalence))
    header = ["ivd_id", "subject_id", "level", "sequence", "centre"] + names
    atomic_write_text(out / "labels.csv", _csv_text(header, label_rows))
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary


def _summarise(label_rows, latent_rows, table: TaskTable, centre_list) -> dict:
    ivd_rows = [r for r in label_rows if r[3] == SEQUENCES[0]]
    centres = {c.name: 0 for c in centre_list}
    levels = {lv: 0 for lv in LEVELS}
    seen = set()
    for r in ivd_rows:
        levels[r[2]] += 1
        if r[1] not in seen:
            seen.add(r[1])
            centres[r[4]] += 1
    counts, prevalence, normal, missing = {}, {}, {}, {}
    for t, task in enumerate(table.tasks):
        col = [r[5 + t] for r in ivd_rows]
        c = [0] * task.num_grades
        for v in col:
            if v != "":
                c[int(v)] += 1
        n = sum(c)
        counts[task.name] = c
        prevalence[task.name] = [round(k / n, 4) if n else 0.0 for k in c]
        normal[task.name] = prevalence[task.name][0]
        missing[task.name] = len(col) - n
    return {
        "subjects": len(seen), "ivds": len(ivd_rows), "volumes": len(label_rows),
        "centres": centres, "levels": levels, "grade_counts": counts, "prevalence": prevalence,
        "normal_prevalence": normal, "missing": missing,
    }
