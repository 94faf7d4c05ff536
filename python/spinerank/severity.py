"""A calibrated severity scale: the raw score mapped so that a severity means the
same on every task and every run.

A task with K grades is graded by K - 1 thresholds τ_1 ≤ … ≤ τ_{K-1} on its raw
score (``spinerank calibrate``; a score's grade is the number of thresholds
strictly below it). Each run and task puts them elsewhere, so a raw score of 6
can be grade 1 on one task and grade 2 on another. The severity is a strictly
increasing piecewise-linear map of the score that sends threshold k to the fixed
boundary

    b_k = (k - ½) S / (K - 1),  k = 1 … K - 1   (``boundaries``; S = score_scale)

so a severity's grade is the number of these fixed boundaries strictly below it,
the same grade the thresholds give the score, whatever the task or run.

Knots (``SeverityMap.from_thresholds``): (0, 0), (τ_k, b_k) for k = 1 … K - 1,
(S, S); between two knots the map is linear, and beyond the outer knots it
continues with slope 1. With 0 < τ_1 < … < τ_{K-1} < S this is one continuous,
strictly increasing map of [0, S] onto [0, S] (np.interp over the knots).

Degenerate thresholds (a grade left empty by the fit, or hand-written ones):

- equal thresholds τ_k = τ_{k+1}: both knots are kept, at the same score. No
  score has the empty grade between them, and the map jumps there: a score
  equal to the threshold maps to b_k, a larger one above b_{k+1};
- a threshold at or below 0 drops the knot (0, 0), a threshold at or above S the
  knot (S, S) (a score of 0 below a threshold of 0 is then not severity 0: it
  has to stay below b_1);
- in general a knot segment is half-open, (x_{j-1}, x_j], like the grades (a
  score equal to a threshold is below it), so a score equal to a knot's score
  maps to that knot's severity (the lowest one when knots share a score).

A score's severity lies in its segment's interval (y_{j-1}, y_j]; floating-point
rounding of the interpolation is nudged back into it (by an ulp or so), so the
severity's grade equals the thresholds' grade for every score, scores equal to a
threshold included. Severity is a strictly increasing function of the score (in
floating point non-decreasing), so rank metrics (Spearman, Kendall, C-index,
ROC-AUC of the score) are the same on either.

For the classifier methods (ce, corn, mae) the score is the expected grade on the
score scale, E[k] S / (K - 1), and their grade boundaries are the fixed ones,
(c + ½) S / (K - 1): the thresholds already sit on the boundaries and the map is
the identity (severity = score). So is it for a ranking run graded by the fixed
thresholds (no thresholds.json).

The map is a function of the thresholds, K and S alone, so it is not stored:
evaluate and predict build it from ``RUN/thresholds.json``'s thresholds
(``maps_for``), and every file, old or new, gives the same map.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .metrics import fixed_thresholds


def boundaries(num_grades: int, scale: float = 10.0) -> np.ndarray:
    """The fixed grade boundaries on the severity scale: b_k = (k - ½) S / (K - 1), k = 1 … K - 1."""
    return fixed_thresholds(num_grades, scale)


@dataclasses.dataclass(frozen=True)
class SeverityMap:
    """A strictly increasing piecewise-linear map from raw score to severity, given
    by knots: scores ``x`` non-decreasing (equal ones make a jump), severities
    ``y`` strictly increasing. Beyond the outer knots the map has slope 1."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    def __post_init__(self):
        x, y = np.asarray(self.x, dtype=np.float64), np.asarray(self.y, dtype=np.float64)
        if x.ndim != 1 or x.shape != y.shape or x.size == 0:
            raise ValueError(f"severity map: knots need as many scores as severities (one or more), "
                             f"got {x.size} and {y.size}")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError("severity map: knots must be finite")
        if (np.diff(x) < 0).any() or (np.diff(y) <= 0).any():
            raise ValueError("severity map: knot scores must be non-decreasing and severities strictly increasing")
        object.__setattr__(self, "x", tuple(float(v) for v in x))
        object.__setattr__(self, "y", tuple(float(v) for v in y))

    @classmethod
    def from_thresholds(cls, thresholds, num_grades: int, scale: float = 10.0) -> "SeverityMap":
        """The map sending threshold k to b_k (module docstring): knots (0, 0) when
        0 < τ_1, (τ_k, b_k), and (S, S) when τ_{K-1} < S."""
        tau = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        if tau.size != num_grades - 1:
            raise ValueError(f"severity map: {num_grades} grades need {num_grades - 1} thresholds, got {tau.size}")
        if not np.isfinite(tau).all() or (np.diff(tau) < 0).any():
            raise ValueError(f"severity map: thresholds must be finite and non-decreasing, got {tau.tolist()}")
        x, y = list(tau), list(boundaries(num_grades, scale))
        if tau[0] > 0:
            x, y = [0.0] + x, [0.0] + y
        if tau[-1] < scale:
            x, y = x + [float(scale)], y + [float(scale)]
        return cls(tuple(x), tuple(y))

    @classmethod
    def identity(cls, num_grades: int, scale: float = 10.0) -> "SeverityMap":
        """The map of the fixed thresholds (classifiers, uncalibrated runs): severity = score."""
        return cls.from_thresholds(fixed_thresholds(num_grades, scale), num_grades, scale)

    @property
    def is_identity(self) -> bool:
        return self.x == self.y

    def __call__(self, scores) -> np.ndarray:
        """The severity of each score (same shape, float64)."""
        s = np.asarray(scores, dtype=np.float64)
        if self.is_identity:  # a slope-1 map through the diagonal: exactly the score
            return s.copy()
        x, y = np.asarray(self.x), np.asarray(self.y)
        m = x.size
        flat = s.reshape(-1)
        j = np.searchsorted(x, flat, side="left")  # knots strictly below: the segment is (x[j-1], x[j]]
        lo, hi = np.clip(j - 1, 0, m - 1), np.clip(j, 0, m - 1)
        width = x[hi] - x[lo]
        inside = (j > 0) & (j < m)
        slope = np.ones_like(flat)
        with np.errstate(over="ignore"):  # knots an ulp apart: an infinite slope, clipped below
            np.divide(y[hi] - y[lo], width, out=slope, where=inside)  # inside, width > 0
            out = np.where(j == 0, y[0] - (x[0] - flat), y[lo] + (flat - x[lo]) * slope)
        out = np.where(inside & (flat == x[hi]), y[hi], out)  # exactly on a knot: its severity
        # Rounding must not carry a severity out of its segment's (y[j-1], y[j]].
        floor = np.where(j > 0, np.nextafter(y[lo], np.inf), -np.inf)
        ceiling = np.where(j < m, y[hi], np.inf)
        out = np.minimum(np.maximum(out, floor), ceiling)
        out = np.where(np.isnan(flat), np.nan, out)
        return out.reshape(s.shape)


def maps_for(thresholds, num_grades, scale: float = 10.0) -> list[SeverityMap]:
    """One map per task, from its thresholds (``SeverityMap.from_thresholds``)."""
    return [SeverityMap.from_thresholds(tau, K, scale) for tau, K in zip(thresholds, num_grades)]


def severities(scores: np.ndarray, maps: list[SeverityMap]) -> np.ndarray:
    """(N, T) severities of (N, T) scores, task t through ``maps[t]``."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape[1] != len(maps):
        raise ValueError(f"{scores.shape[1]} tasks of scores but {len(maps)} severity maps")
    return np.stack([m(scores[:, t]) for t, m in enumerate(maps)], 1) if len(maps) else scores.copy()
