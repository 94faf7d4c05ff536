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


# -- evaluation (SPEC §9) -------------------------------------------------------------


def score_probabilities(scores, num_grades: int, scale: float = 10.0) -> np.ndarray:
    """(N, K) class probabilities of continuous scores: p_k ∝ exp(-|s - c_k|), c_k = k S / (K - 1)."""
    centres = np.arange(num_grades) * scale / (num_grades - 1)
    logits = -np.abs(np.asarray(scores, dtype=np.float64)[:, None] - centres[None, :])
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


def concordance_index(scores, grades) -> float:
    """Harrell's C over pairs of different grades: the fraction ordered like their
    grades by the score, ties in score counting one half. Sorting per grade makes
    it O(G² N log N) instead of O(N²)."""
    scores, grades = np.asarray(scores, dtype=np.float64), np.asarray(grades)
    levels = np.unique(grades)
    by_grade = [np.sort(scores[grades == g]) for g in levels]
    concordant = comparable = 0.0
    for a in range(len(levels)):
        for b in range(a + 1, len(levels)):
            low, high = by_grade[a], by_grade[b]
            below = np.searchsorted(low, high, side="left")  # low scores strictly below each high one
            ties = np.searchsorted(low, high, side="right") - below
            concordant += below.sum() + 0.5 * ties.sum()
            comparable += low.size * high.size
    return float(concordant / comparable) if comparable else float("nan")


def roc_auc_ovr(grades, probs) -> float:
    """One-vs-rest ROC-AUC averaged (macro) over the classes present, each a
    binary scikit-learn AUC of that class's probability; nan with one class."""
    from sklearn.metrics import roc_auc_score

    grades = np.asarray(grades)
    present = np.unique(grades)
    if present.size < 2:
        return float("nan")
    return float(np.mean([roc_auc_score(grades == c, probs[:, c]) for c in present]))


def binary_auc(positive, scores) -> float:
    """ROC-AUC of ``scores`` for the boolean labels ``positive`` (scikit-learn); nan with one class."""
    from sklearn.metrics import roc_auc_score

    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, scores))


def normal_vs_abnormal(grades, predicted, scores) -> dict[str, float]:
    """Grade 0 (normal) against grades >= 1 (abnormal), as the published code
    reports it: the ROC-AUC of the score, and the sensitivity (abnormal discs
    graded >= 1) and specificity (normal discs graded 0) of the predicted grades,
    i.e. at the calibrated threshold between grades 0 and 1. nan where a side is empty."""
    grades, predicted = np.asarray(grades), np.asarray(predicted)
    abnormal = grades >= 1
    return {"normal_auc": binary_auc(abnormal, scores),
            "sensitivity": float((predicted[abnormal] >= 1).mean()) if abnormal.any() else float("nan"),
            "specificity": float((predicted[~abnormal] == 0).mean()) if (~abnormal).any() else float("nan")}


def boundary_aucs(grades, scores, num_grades: int) -> list[float]:
    """ROC-AUC of the score for "grade > k", k = 0..K-2 (nan where one side is empty)."""
    grades = np.asarray(grades)
    return [binary_auc(grades > k, scores) for k in range(num_grades - 1)]


def task_metrics(grades, predicted, scores, probs, num_grades: int) -> dict:
    """SPEC §9 metrics of one task on its labelled samples (scikit-learn, scipy),
    with normal-vs-abnormal and per-boundary ROC-AUCs (``boundary_auc``: a list
    over k of "grade > k"; ``boundary_auc_mean``: their mean where defined)."""
    import warnings

    from scipy.stats import kendalltau, spearmanr
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, matthews_corrcoef

    grades, predicted = np.asarray(grades, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if grades.size == 0:
        return {name: float("nan") for name in METRIC_NAMES} | {"boundary_auc": [float("nan")] * (num_grades - 1),
                                                                 "n": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes missing from a prediction, constant inputs: nan is the answer
        result = {
            "balanced_accuracy": balanced_accuracy_score(grades, predicted),
            "roc_auc": roc_auc_ovr(grades, probs),
            "qwk": cohen_kappa_score(grades, predicted, weights="quadratic", labels=list(range(num_grades))),
            "mae": float(np.abs(grades - predicted).mean()),
            "mcc": matthews_corrcoef(grades, predicted),
            "spearman": spearmanr(scores, grades).statistic,
            "kendall": kendalltau(scores, grades).statistic,
            "c_index": concordance_index(scores, grades),
            **normal_vs_abnormal(grades, predicted, scores),
        }
        boundary = boundary_aucs(grades, scores, num_grades)
        defined = [v for v in boundary if np.isfinite(v)]
        result["boundary_auc_mean"] = float(np.mean(defined)) if defined else float("nan")
    return {k: float(v) for k, v in result.items()} | {"boundary_auc": boundary, "n": int(grades.size)}


def latent_spearman(scores, latent, grades) -> dict[str, float]:
    """Spearman of score vs the hidden severity (synthetic data), overall and
    within each grade (nan where a grade has fewer than 3 samples)."""
    import warnings

    from scipy.stats import spearmanr

    scores, latent, grades = np.asarray(scores), np.asarray(latent), np.asarray(grades)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {"overall": float(spearmanr(scores, latent).statistic) if scores.size >= 3 else float("nan")}
        for g in np.unique(grades):
            keep = grades == g
            out[f"grade_{int(g)}"] = float(spearmanr(scores[keep], latent[keep]).statistic) \
                if keep.sum() >= 3 else float("nan")
    return out


METRIC_NAMES = ("balanced_accuracy", "roc_auc", "qwk", "mae", "mcc", "spearman", "kendall", "c_index",
                "normal_auc", "sensitivity", "specificity", "boundary_auc_mean")


def aggregate(per_task: dict[str, dict[str, float]], names=METRIC_NAMES) -> dict[str, dict[str, float]]:
    """Mean ± std over tasks (nan tasks left out; population std), the paper's Table 1 layout."""
    out = {}
    for name in names:
        values = np.array([m[name] for m in per_task.values() if m.get(name) is not None], dtype=np.float64)
        values = values[np.isfinite(values)]
        out[name] = {"mean": float(values.mean()) if values.size else float("nan"),
                     "std": float(values.std()) if values.size else float("nan"), "tasks": int(values.size)}
    return out
