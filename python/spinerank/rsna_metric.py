"""The RSNA 2024 Lumbar Spine Degenerative Classification metric, on evaluated disc rows.

Written from the competition's description (../shared/DATASETS.md §2.5), not from its code.

Inputs: one row per disc (a study's ``subject_id`` and its ``level``), and for each
of the five conditions below a true grade per row (0 Normal/Mild, 1 Moderate,
2 Severe, -1 missing) and predicted class probabilities (N, 3).

1. Repeated discs. Rows that share (subject_id, level) (evaluation on T1 and T2,
   one row per volume) are merged first, per condition: the label is the one the
   rows carry (they must agree), the probabilities are the mean over the rows that
   carry it. So every (study, condition, level) is scored once.
2. Probabilities: each row is clipped to [eps, 1 - eps], eps = float64 machine
   epsilon (2.22e-16, scikit-learn's choice for float64 input), then divided by its
   sum so it sums to 1 (the clipping comes first, so a value above 1 counts as
   1 - eps: pass probabilities, e.g. a softmax, not unnormalised scores).
3. Sample weight of a scored pair: 1, 2 or 4 for a true class of Normal/Mild,
   Moderate or Severe (``SAMPLE_WEIGHTS``).
4. Three condition groups (``CONDITION_GROUPS``): spinal; foraminal = left + right
   neural foraminal narrowing; subarticular = left + right subarticular stenosis.
   Per group, over its labelled (disc, condition) pairs i (missing labels are not
   scored): loss = sum_i w_i * -ln p_i[y_i] / sum_i w_i (scikit-learn's
   ``log_loss(normalize=True, sample_weight=w)``).
5. any_severe_spinal, per study with at least one labelled spinal disc, over those
   labelled discs only (unlabelled rows are not scored anywhere): y = 1 if one of
   them is Severe; p = the largest P(Severe) among them (after step 2), clipped to
   [eps, 1 - eps]; w = the largest sample weight among them. loss =
   sum_s w_s * -(y_s ln p_s + (1 - y_s) ln(1 - p_s)) / sum_s w_s.
6. score = weighted mean of [spinal, foraminal, subarticular, any_severe_spinal]
   with weights [1, 1, 1, 1] (``TERM_WEIGHTS``). A term without any scored pair or
   study is NaN, is left out of the mean and is listed in the result's ``left_out``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

SPINAL = "SpinalCanalStenosis"
LEFT_FORAMINAL = "LeftNeuralForaminalNarrowing"
RIGHT_FORAMINAL = "RightNeuralForaminalNarrowing"
LEFT_SUBARTICULAR = "LeftSubarticularStenosis"
RIGHT_SUBARTICULAR = "RightSubarticularStenosis"
TASK_NAMES = (SPINAL, LEFT_FORAMINAL, RIGHT_FORAMINAL, LEFT_SUBARTICULAR, RIGHT_SUBARTICULAR)

CONDITION_GROUPS = {
    "spinal": [SPINAL],
    "foraminal": [LEFT_FORAMINAL, RIGHT_FORAMINAL],
    "subarticular": [LEFT_SUBARTICULAR, RIGHT_SUBARTICULAR],
}
NUM_CLASSES = 3
SEVERE = 2
#: Weight of a scored pair by its true class: Normal/Mild, Moderate, Severe (not 1/2/3).
SAMPLE_WEIGHTS = (1, 2, 4)
ANY_SEVERE = "any_severe_spinal"
#: Weights of the four terms in the final score; the last is the competition's any_severe_scalar.
TERM_WEIGHTS = {"spinal": 1.0, "foraminal": 1.0, "subarticular": 1.0, ANY_SEVERE: 1.0}
#: Clipping bound: float64 machine epsilon, as scikit-learn uses for float64 probabilities.
EPS = float(np.finfo(np.float64).eps)


def applies(task_names: Sequence[str], num_grades: Sequence[int] | None = None) -> bool:
    """Whether a task table holds all five RSNA conditions (and, given
    ``num_grades``, each with 3 grades), so the metric can be computed."""
    names = list(task_names)
    if not all(name in names for name in TASK_NAMES):
        return False
    if num_grades is None:
        return True
    grades_of = dict(zip(names, num_grades))
    return all(grades_of.get(name) == NUM_CLASSES for name in TASK_NAMES)


# ---------------------------------------------------------------------------
# Input checks


def _check_labels(name: str, values, n: int) -> np.ndarray:
    array = np.asarray(values)
    if array.shape != (n,):
        raise ValueError(f"labels[{name!r}]: expected shape ({n},) (one grade per row), got {array.shape}")
    if array.dtype.kind not in "iub":
        if array.dtype.kind != "f" or not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise ValueError(f"labels[{name!r}]: expected integer grades (-1 = missing), got dtype {array.dtype}")
    array = array.astype(np.int64)
    bad = sorted(set(np.unique(array).tolist()) - {-1, 0, 1, 2})
    if bad:
        raise ValueError(f"labels[{name!r}]: grades must be 0, 1, 2 or -1 (missing); found {bad}")
    return array


def _check_probs(name: str, values, n: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n, NUM_CLASSES):
        raise ValueError(f"probs[{name!r}]: expected shape ({n}, {NUM_CLASSES}) (K = 3: Normal/Mild, Moderate, "
                         f"Severe), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"probs[{name!r}]: probabilities must be finite (found NaN or infinity)")
    if np.any(array < 0):
        raise ValueError(f"probs[{name!r}]: probabilities must be non-negative (min {array.min():g})")
    return array


def _check_inputs(subject_ids, levels, labels, probs):
    subjects = [str(s) for s in subject_ids]
    levels = [str(v) for v in levels]
    if len(subjects) != len(levels):
        raise ValueError(f"subject_ids and levels differ in length: {len(subjects)} vs {len(levels)}")
    n = len(subjects)
    for what, given in (("labels", labels), ("probs", probs)):
        if not isinstance(given, Mapping):
            raise ValueError(f"{what}: expected a dict task name -> array, got {type(given).__name__}")
        absent = [name for name in TASK_NAMES if name not in given]
        if absent:
            raise ValueError(f"{what}: missing the task(s) {', '.join(absent)}")
    checked_labels = {name: _check_labels(name, labels[name], n) for name in TASK_NAMES}
    checked_probs = {name: _check_probs(name, probs[name], n) for name in TASK_NAMES}
    return subjects, levels, checked_labels, checked_probs


# ---------------------------------------------------------------------------
# The metric


def _normalised(probs: np.ndarray) -> np.ndarray:
    """Rows clipped to [EPS, 1 - EPS] and rescaled to sum 1 (a zero row becomes uniform)."""
    clipped = np.clip(probs, EPS, 1 - EPS)
    return clipped / clipped.sum(axis=1, keepdims=True)


def _merge_repeated(subjects, levels, labels, probs):
    """One row per (subject, level): per task, the label its rows carry and the mean
    probabilities of the rows that carry it (of all its rows when none does: the disc
    is then unscored for that task). Returns the (subject, level) keys, labels and
    probs per task, and how many rows were merged away."""
    keys = list(zip(subjects, levels))
    discs = sorted(set(keys))
    if len(discs) == len(keys):  # the default evaluation: one row per disc already
        return keys, labels, probs, 0
    index = {disc: i for i, disc in enumerate(discs)}
    row_disc = np.array([index[k] for k in keys], dtype=np.int64)
    D = len(discs)
    merged_labels, merged_probs = {}, {}
    for name in TASK_NAMES:
        y, p = labels[name], probs[name]
        labelled = y >= 0
        n_labelled = np.bincount(row_disc[labelled], minlength=D)
        lowest, highest = np.full(D, NUM_CLASSES), np.full(D, -1)
        np.minimum.at(lowest, row_disc[labelled], y[labelled])
        np.maximum.at(highest, row_disc[labelled], y[labelled])
        conflict = np.flatnonzero((n_labelled > 0) & (lowest != highest))
        if conflict.size:
            subject, level = discs[conflict[0]]
            raise ValueError(f"labels[{name!r}]: the rows of study {subject} level {level} disagree "
                             f"({lowest[conflict[0]]} vs {highest[conflict[0]]}); repeated rows of a disc must "
                             "carry the same grade")
        # A row without the label (e.g. masked on its sequence) does not grade this condition,
        # so only the labelled rows are averaged; a disc without any label is unscored anyway.
        used = labelled | (n_labelled[row_disc] == 0)
        sums = np.zeros((D, NUM_CLASSES))
        np.add.at(sums, row_disc[used], p[used])
        merged_labels[name] = highest  # -1 where no row carries a label
        merged_probs[name] = sums / np.bincount(row_disc[used], minlength=D)[:, None]
    return discs, merged_labels, merged_probs, len(keys) - len(discs)


def _weighted_log_loss(true_class: np.ndarray, probs: np.ndarray) -> float:
    """sum w * -ln p[true] / sum w, w = SAMPLE_WEIGHTS[true]; NaN without rows."""
    if true_class.size == 0:
        return float("nan")
    weights = np.asarray(SAMPLE_WEIGHTS, dtype=np.float64)[true_class]
    picked = probs[np.arange(true_class.size), true_class]
    return float(np.sum(weights * -np.log(picked)) / np.sum(weights))


def _any_severe_spinal(discs, spinal_labels: np.ndarray, spinal_probs: np.ndarray) -> tuple[float, int]:
    """The binary any-severe loss over studies with a labelled spinal disc, and their count."""
    worst_label: dict[str, int] = {}
    max_severe: dict[str, float] = {}
    for (subject, _), y, p in zip(discs, spinal_labels, spinal_probs[:, SEVERE]):
        if y < 0:
            continue
        worst_label[subject] = max(worst_label.get(subject, 0), int(y))
        max_severe[subject] = max(max_severe.get(subject, 0.0), float(p))
    if not worst_label:
        return float("nan"), 0
    studies = sorted(worst_label)
    # The largest sample weight among a study's discs is the weight of its worst grade.
    worst = np.array([worst_label[s] for s in studies])
    y = (worst == SEVERE).astype(np.float64)
    p = np.clip(np.array([max_severe[s] for s in studies]), EPS, 1 - EPS)
    weights = np.asarray(SAMPLE_WEIGHTS, dtype=np.float64)[worst]
    losses = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(np.sum(weights * losses) / np.sum(weights)), len(studies)


def competition_score(subject_ids: Sequence, levels: Sequence, labels: Mapping[str, np.ndarray],
                      probs: Mapping[str, np.ndarray]) -> dict:
    """The RSNA 2024 score of evaluated rows (see the module docstring).

    ``labels[task]``: (N,) ints, -1 missing; ``probs[task]``: (N, 3) non-negative,
    finite probabilities, for the five tasks of ``TASK_NAMES`` (others are ignored).
    Returns {"score", "spinal", "foraminal", "subarticular", "any_severe_spinal",
    "rows": {group: scored (disc, condition) pairs}, "studies": studies in the
    any-severe term, "left_out": NaN terms not in the mean, "merged_rows": rows
    averaged into a repeated disc, "eps"}. Raises ValueError on bad input.
    """
    subjects, levels, labels, probs = _check_inputs(subject_ids, levels, labels, probs)
    discs, labels, probs, merged_rows = _merge_repeated(subjects, levels, labels, probs)
    probs = {name: _normalised(p) for name, p in probs.items()}

    result: dict = {}
    rows: dict[str, int] = {}
    for group, names in CONDITION_GROUPS.items():
        true_class = np.concatenate([labels[name] for name in names])
        group_probs = np.concatenate([probs[name] for name in names])
        scored = true_class >= 0
        result[group] = _weighted_log_loss(true_class[scored], group_probs[scored])
        rows[group] = int(scored.sum())
    result[ANY_SEVERE], studies = _any_severe_spinal(discs, labels[SPINAL], probs[SPINAL])

    present = [term for term in TERM_WEIGHTS if np.isfinite(result[term])]
    total_weight = sum(TERM_WEIGHTS[term] for term in present)
    score = sum(TERM_WEIGHTS[term] * result[term] for term in present) / total_weight if present else float("nan")
    return {"score": float(score), **result, "rows": rows, "studies": studies,
            "left_out": [term for term in TERM_WEIGHTS if term not in present],
            "merged_rows": merged_rows, "eps": EPS}
