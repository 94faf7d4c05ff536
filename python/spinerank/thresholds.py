"""Per-task grade thresholds on continuous scores (SPEC §8).

A score's grade is the number of thresholds strictly below it. The default fit is
a coordinate-descent grid search maximising an objective on validation scores:

1. start from the quantiles of the scores at the cumulative grade frequencies;
2. for each threshold in turn, a 200-point sweep over [min - 0.5, max + 0.5];
3. two refinement passes of 400 points, each in a window of +-10 steps of the
   previous pass's grid around the current threshold;
4. a Nelder-Mead polish (scipy) from the result, kept only if not worse.

A threshold only moves between its neighbours, so the thresholds stay ordered.
Every candidate of a sweep is scored at once: moving threshold k only moves the
samples between thresholds k-1 and k+1 from grade k to k+1, so sorting those
scores per true grade gives every candidate's confusion matrix from two
``searchsorted`` calls. ``fit_thresholds_sklearn`` runs the same search, scoring
each candidate with scikit-learn instead; it exists to check and to benchmark
the vectorised one and picks the same thresholds.

Objectives (larger is better): ``composite`` = 0.5 BA + 0.3 max(QWK, 0) +
0.2 (1 - MAE / (K - 1)), ``balanced_accuracy``, ``qwk``. An undefined QWK (one
grade everywhere) counts as 0. Objective values are rounded to 12 decimals
before comparison, so equal values computed in different orders tie, and ties go
to the first candidate (the smaller threshold).

Alternatives (``method``): ``isotonic`` (thresholds where an isotonic fit of
grade on score crosses k + 0.5), ``youden`` (per boundary, the cut maximising
TPR - FPR for "grade > k"), ``gmm`` (boundaries between the components of a
K-component Gaussian mixture of the scores). Whatever the method, the K - 1
thresholds are finite, sorted and within the validation scores' range.
"""
from __future__ import annotations

import warnings

import numpy as np

from .metrics import grades_from_scores

OBJECTIVES = ("composite", "balanced_accuracy", "qwk")
METHODS = ("grid", "isotonic", "youden", "gmm")
COARSE_POINTS = 200
FINE_POINTS = 400
FINE_PASSES = 2
WINDOW_STEPS = 10
_DECIMALS = 12


# -- objectives from confusion matrices --------------------------------------------


def objective_from_confusion(confusion: np.ndarray, objective: str) -> np.ndarray:
    """Objective of each confusion matrix in ``confusion`` (..., K, K): rows are
    true grades, columns predicted grades."""
    confusion = np.asarray(confusion, dtype=np.float64)
    K = confusion.shape[-1]
    support = confusion.sum(-1)  # (..., K)
    present = support > 0
    recall = np.divide(np.diagonal(confusion, axis1=-2, axis2=-1), support,
                       out=np.zeros_like(support), where=present)
    ba = recall.sum(-1) / np.maximum(present.sum(-1), 1)
    if objective == "balanced_accuracy":
        return np.round(ba, _DECIMALS)
    n = confusion.sum((-2, -1))
    i, j = np.indices((K, K))
    weights = (i - j) ** 2.0
    expected = support[..., :, None] * confusion.sum(-2)[..., None, :] / np.maximum(n, 1)[..., None, None]
    denominator = (weights * expected).sum((-2, -1))
    qwk = np.divide(1.0 * (weights * confusion).sum((-2, -1)), denominator,
                    out=np.ones_like(denominator), where=denominator > 0)
    qwk = np.where(denominator > 0, 1.0 - qwk, 0.0)  # undefined counts as 0
    if objective == "qwk":
        return np.round(qwk, _DECIMALS)
    mae = (np.abs(i - j) * confusion).sum((-2, -1)) / np.maximum(n, 1)
    return np.round(0.5 * ba + 0.3 * np.maximum(qwk, 0.0) + 0.2 * (1.0 - mae / (K - 1)), _DECIMALS)


def _confusion(grades, predicted, K) -> np.ndarray:
    return np.bincount(grades * K + predicted, minlength=K * K).reshape(K, K).astype(np.float64)


class _Task:
    """The validation scores of one task, and vectorised objective evaluation."""

    def __init__(self, scores, grades, num_grades: int, objective: str):
        scores, grades = _check(scores, grades, num_grades)
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        self.scores, self.grades, self.K, self.objective = scores, grades, num_grades, objective

    def value(self, thresholds) -> float:
        predicted = grades_from_scores(self.scores, thresholds)
        return float(objective_from_confusion(_confusion(self.grades, predicted, self.K), self.objective))

    def sweep(self, thresholds: np.ndarray, k: int, candidates: np.ndarray) -> np.ndarray:
        """Objective for each candidate value of threshold k, the others fixed;
        -inf where a candidate would pass a neighbour."""
        K = self.K
        lower = thresholds[k - 1] if k > 0 else -np.inf
        upper = thresholds[k + 1] if k < K - 2 else np.inf
        # Everything outside (lower, upper] keeps its grade; inside, grade k, +1 above the candidate.
        base = grades_from_scores(self.scores, thresholds)
        band = (self.scores > lower) & (self.scores <= upper)
        base[band] = k
        confusion = _confusion(self.grades, base, K)
        moved = np.zeros((candidates.size, K))
        for y in range(K):
            band_y = np.sort(self.scores[band & (self.grades == y)])
            moved[:, y] = band_y.size - np.searchsorted(band_y, candidates, side="right")
        confusions = np.repeat(confusion[None], candidates.size, 0)
        confusions[:, :, k] -= moved
        confusions[:, :, k + 1] += moved
        values = objective_from_confusion(confusions, self.objective)
        return np.where((candidates >= lower) & (candidates <= upper), values, -np.inf)


def objective_value(scores, grades, num_grades: int, thresholds, objective: str = "composite") -> float:
    """The objective reached by ``thresholds`` on (score, grade) pairs."""
    return _Task(scores, grades, num_grades, objective).value(thresholds)


def _check(scores, grades, num_grades):
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    grades = np.asarray(grades).reshape(-1)
    if scores.shape != grades.shape:
        raise ValueError(f"scores and grades differ in length: {scores.size} vs {grades.size}")
    if not isinstance(num_grades, (int, np.integer)) or num_grades < 2:
        raise ValueError(f"num_grades must be an int >= 2, got {num_grades!r}")
    if scores.size == 0:
        raise ValueError("no validation scores with a grade to fit thresholds on")
    if not np.isfinite(scores).all():
        raise ValueError(f"scores contain {int((~np.isfinite(scores)).sum())} non-finite value(s)")
    if not np.issubdtype(grades.dtype, np.integer) or grades.min() < 0 or grades.max() >= num_grades:
        raise ValueError(f"grades must be integers in 0..{num_grades - 1}, got values in "
                         f"{grades.min()}..{grades.max()}")
    return scores, grades.astype(np.int64)


def initial_thresholds(scores, grades, num_grades: int) -> np.ndarray:
    """Quantiles of the scores at the cumulative grade frequencies: the thresholds
    that would reproduce each grade's prevalence."""
    cumulative = np.cumsum(np.bincount(grades, minlength=num_grades))[:-1] / grades.size
    return np.quantile(scores, cumulative)


def _grid(task, score_candidates) -> np.ndarray:
    """Coordinate descent; ``score_candidates(thresholds, k, candidates)`` scores a sweep.
    A threshold moves only to a strictly better candidate."""
    lo, hi = task.scores.min() - 0.5, task.scores.max() + 0.5
    thresholds = initial_thresholds(task.scores, task.grades, task.K)
    step = (hi - lo) / (COARSE_POINTS - 1)
    windows = [None] + [WINDOW_STEPS] * FINE_PASSES
    for window in windows:
        if window is not None:
            half = window * step
            step = 2 * half / (FINE_POINTS - 1)
        for k in range(task.K - 1):
            if window is None:
                candidates = np.linspace(lo, hi, COARSE_POINTS)
            else:
                candidates = np.linspace(thresholds[k] - half, thresholds[k] + half, FINE_POINTS)
            values = score_candidates(thresholds, k, candidates)
            best = int(np.argmax(values))
            if values[best] > task.value(thresholds):
                thresholds[k] = candidates[best]
    return thresholds


def _polish(task, thresholds: np.ndarray, value) -> np.ndarray:
    from scipy.optimize import minimize

    def loss(x):
        return -value(np.sort(x))

    start = loss(thresholds)
    result = minimize(loss, thresholds, method="Nelder-Mead",
                      options={"xatol": 1e-4, "fatol": 1e-9, "maxiter": 200 * thresholds.size})
    polished = np.sort(result.x)
    return polished if loss(polished) <= start else thresholds


def fit_thresholds(scores, grades, num_grades: int, objective: str = "composite", method: str = "grid",
                   polish: bool = True) -> np.ndarray:
    """K - 1 ordered, finite thresholds for one task fitted on (score, grade)
    pairs, each within the validation scores' range (see ``within_scores``)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    task = _Task(scores, grades, num_grades, objective)
    if method == "isotonic":
        thresholds = _isotonic(task)
    elif method == "youden":
        thresholds = _youden(task)
    elif method == "gmm":
        thresholds = _gmm(task)
    else:
        thresholds = _grid(task, task.sweep)
        if polish:
            thresholds = _polish(task, thresholds, task.value)
    return within_scores(thresholds, task.scores)


def within_scores(thresholds, scores) -> np.ndarray:
    """Thresholds moved into [just below min(scores), max(scores)], then made
    non-decreasing. A threshold below every score (or above every one) grades
    the validation scores exactly as one just below the smallest (or at the
    largest) does, so the fit is unchanged; on new scores, no grade boundary
    lies beyond what the validation data showed."""
    scores = np.asarray(scores, dtype=np.float64)
    lowest = np.nextafter(scores.min(), -np.inf)
    clipped = np.clip(np.asarray(thresholds, dtype=np.float64), lowest, scores.max())
    return np.maximum.accumulate(clipped)


# -- the same search, scoring each candidate with scikit-learn (reference) --------


def sklearn_objective(grades, predicted, num_grades: int, objective: str) -> float:
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, mean_absolute_error

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ba = balanced_accuracy_score(grades, predicted)
        qwk = cohen_kappa_score(grades, predicted, weights="quadratic", labels=list(range(num_grades)))
    qwk = 0.0 if np.isnan(qwk) else qwk
    if objective == "balanced_accuracy":
        value = ba
    elif objective == "qwk":
        value = qwk
    else:
        mae = mean_absolute_error(grades, predicted)
        value = 0.5 * ba + 0.3 * max(qwk, 0.0) + 0.2 * (1.0 - mae / (num_grades - 1))
    return round(float(value), _DECIMALS)


def fit_thresholds_sklearn(scores, grades, num_grades: int, objective: str = "composite",
                           polish: bool = True) -> np.ndarray:
    """``fit_thresholds(method="grid")`` with every candidate evaluated one by one
    by scikit-learn. Slow; for tests and benchmarks."""
    task = _Task(scores, grades, num_grades, objective)

    def value(thresholds):
        predicted = grades_from_scores(task.scores, thresholds)
        return sklearn_objective(task.grades, predicted, num_grades, objective)

    def one_by_one(thresholds, k, candidates):
        lower = thresholds[k - 1] if k > 0 else -np.inf
        upper = thresholds[k + 1] if k < num_grades - 2 else np.inf
        values = np.full(candidates.size, -np.inf)
        for n, c in enumerate(candidates):
            if lower <= c <= upper:
                trial = thresholds.copy()
                trial[k] = c
                values[n] = value(trial)
        return values

    task.value = value
    thresholds = _grid(task, one_by_one)
    return within_scores(_polish(task, thresholds, value) if polish else thresholds, task.scores)


# -- alternatives ---------------------------------------------------------------


def _isotonic(task) -> np.ndarray:
    from sklearn.isotonic import IsotonicRegression

    order = np.argsort(task.scores, kind="stable")
    xs = task.scores[order]
    fitted = IsotonicRegression(increasing=True).fit(xs, task.grades[order]).predict(xs)
    thresholds = []
    for k in range(task.K - 1):
        above = np.flatnonzero(fitted > k + 0.5)
        if above.size == 0:
            thresholds.append(xs[-1] + 0.5)
        elif above[0] == 0:
            thresholds.append(xs[0] - 0.5)
        else:  # midway between the last score fitted below and the first above
            thresholds.append(0.5 * (xs[above[0] - 1] + xs[above[0]]))
    return np.maximum.accumulate(np.array(thresholds))


def _youden(task) -> np.ndarray:
    from sklearn.metrics import roc_curve

    thresholds = []
    xs = np.unique(task.scores)
    for k in range(task.K - 1):
        positive = task.grades > k
        if positive.all() or not positive.any():
            thresholds.append(xs[0] - 0.5 if positive.all() else xs[-1] + 0.5)
            continue
        fpr, tpr, cuts = roc_curve(positive, task.scores)
        best = cuts[int(np.argmax(tpr - fpr))]  # positive when score >= best
        below = xs[xs < best]
        thresholds.append(0.5 * (below[-1] + best) if below.size else best - 0.5)
    return np.maximum.accumulate(np.array(thresholds))


def _gmm(task) -> np.ndarray:
    """Boundaries between the components of a Gaussian mixture of the scores,
    ordered by mean: boundary k lies between the means of components k and k+1,
    where the weighted density of k+1 first exceeds that of k (midway between
    the means if it never does, as when a narrow component sits inside a wide
    one). With fewer distinct scores than grades there are fewer components, and
    the missing upper boundaries go to the largest score."""
    from scipy.stats import norm
    from sklearn.mixture import GaussianMixture

    x = task.scores.reshape(-1, 1)
    components = min(task.K, np.unique(task.scores).size)
    gmm = GaussianMixture(n_components=components, random_state=0).fit(x)
    order = np.argsort(gmm.means_.ravel(), kind="stable")
    means = gmm.means_.ravel()[order]
    sds = np.sqrt(gmm.covariances_.reshape(components, -1)[:, 0])[order]
    weights = gmm.weights_[order]
    thresholds = np.full(task.K - 1, task.scores.max())
    for k in range(components - 1):
        between = np.linspace(means[k], means[k + 1], 2001)
        lower = np.log(weights[k]) + norm.logpdf(between, means[k], sds[k])
        upper = np.log(weights[k + 1]) + norm.logpdf(between, means[k + 1], sds[k + 1])
        crossing = np.flatnonzero(upper > lower)
        thresholds[k] = between[crossing[0]] if crossing.size else 0.5 * (means[k] + means[k + 1])
    return thresholds
