"""Per-task metrics used for model selection during training (SPEC §7, §9).

Plain numpy implementations of balanced accuracy and quadratic weighted kappa
(checked against scikit-learn in the tests), and the fixed score thresholds of
phase-2 model selection.
"""
from __future__ import annotations

import numpy as np


def balanced_accuracy(y_true, y_pred) -> float:
    """Mean recall over the classes present in ``y_true`` (sklearn's definition)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes = np.unique(y_true)
    if classes.size == 0:
        return float("nan")
    return float(np.mean([(y_pred[y_true == c] == c).mean() for c in classes]))


def quadratic_weighted_kappa(y_true, y_pred, num_grades: int) -> float:
    """Cohen's kappa with quadratic weights over grades 0..K-1.

    1 when the observed and the chance-expected disagreement are both 0 (every
    rating identical), where scikit-learn returns nan."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.size == 0:
        return float("nan")
    K = num_grades
    observed = np.zeros((K, K))
    np.add.at(observed, (y_true, y_pred), 1.0)
    expected = np.outer(observed.sum(1), observed.sum(0)) / y_true.size
    i, j = np.indices((K, K))
    weights = (i - j) ** 2 / (K - 1) ** 2
    denominator = (weights * expected).sum()
    if denominator == 0:
        return 1.0
    return float(1.0 - (weights * observed).sum() / denominator)


def fixed_thresholds(num_grades: int, scale: float = 10.0) -> np.ndarray:
    """(c + 0.5) * S / (K - 1), c = 0..K-2: midway between the grades' ideal scores."""
    return (np.arange(num_grades - 1) + 0.5) * scale / (num_grades - 1)


def grades_from_scores(scores, thresholds) -> np.ndarray:
    """The grade of each score: how many thresholds lie strictly below it (SPEC §8)."""
    return np.searchsorted(np.asarray(thresholds), np.asarray(scores), side="left")
