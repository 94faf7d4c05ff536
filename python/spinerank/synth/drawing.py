"""The phantom drawn for one disc (see the package docstring, "The phantom"): a
sagittal vertebra-disc-vertebra stack on three 2-D images (midline, left and right
lateral) blended across the slices, with each centre's contrast, blur, bias and noise."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from .latent import _KNOWN

DEFAULT_SHAPE = (48, 80, 10)
SEQUENCES = ("T1", "T2")
#: smallest rows/columns the phantom is drawn at
MIN_HW = 16

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
