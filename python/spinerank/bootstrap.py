"""Paired bootstrap intervals of the differences between methods, over test discs.

Every metric is computed from per-disc weights, so that one resample of the test
discs (a vector of multiplicities drawn with replacement) scores every run in the
same way, without copying data: a disc drawn twice counts twice, as it would in
the repeated sample. The metrics are those of ``evaluate`` (``metrics.task_metrics``
and ``metrics.latent_spearman``) written for weights and vectorised over
replicates: a weight matrix ``W`` of shape (R, N) gives R values at once. With all
weights 1 they equal the evaluation's own values (tested against scikit-learn).

The procedure (``paired_differences``):

1. Each run has scored the same N test discs (checked by their ids).
2. Replicate r draws N discs with replacement (a multinomial count vector),
   seeded; the same draw is applied to every seed and every method: the
   comparison is paired over discs and over seeds.
3. In each replicate the task-mean of a metric is computed for every run, and the
   difference method − baseline is averaged over the seeds (pooled).
4. The point estimate is that difference on the full test split; the interval
   is the 2.5th–97.5th percentile of the replicates' differences.

The interval is about the test discs (another test set of the same size). How
much the difference moves from seed to seed is reported beside it, as the std
over seeds of the per-seed differences.
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np

#: (key, larger is better): the metrics the paired differences are reported for.
PAIRED_METRICS = (("qwk", True), ("mae", False), ("balanced_accuracy", True), ("mcc", True),
                  ("roc_auc", True), ("latent_spearman_within_grade", True))
REPLICATES = 2000
SEED = 0


@dataclasses.dataclass
class Outcome:
    """What one evaluated run says about each test disc (``evaluate``'s ``outcome.npz``)."""

    ids: np.ndarray  # (N,) the scored rows' ids (ivd_id/sequence)
    grades: np.ndarray  # (N, T) true grades, -1 where unlabelled
    predicted: np.ndarray  # (N, T) predicted grades
    scores: np.ndarray  # (N, T) raw scores
    probs: list[np.ndarray]  # per task (N, K_t) class probabilities
    latent: np.ndarray | None  # (N, T) hidden severities (synthetic cohorts), nan where missing

    @property
    def num_grades(self) -> list[int]:
        return [p.shape[1] for p in self.probs]


def load_outcome(path) -> Outcome:
    """An evaluation's outcome.npz (arrays only: no pickle is read); a damaged or
    foreign file is a ValueError naming it."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as f:
            tasks = int(f["num_tasks"])
            return Outcome(ids=f["ids"], grades=f["grades"], predicted=f["predicted"], scores=f["scores"],
                           probs=[f[f"probs_{t}"] for t in range(tasks)],
                           latent=f["latent"] if "latent" in f.files else None)
    except (KeyError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path} is not an evaluation's outcome file ({exc}); run spinerank evaluate again") from exc


def outcome_arrays(outcome: Outcome) -> dict[str, np.ndarray]:
    """The arrays ``load_outcome`` reads back (np.savez keywords)."""
    arrays = {"ids": np.asarray(outcome.ids, dtype=str), "grades": outcome.grades, "predicted": outcome.predicted,
              "scores": outcome.scores, "num_tasks": np.array(len(outcome.probs))}
    arrays.update({f"probs_{t}": p for t, p in enumerate(outcome.probs)})
    if outcome.latent is not None:
        arrays["latent"] = outcome.latent
    return arrays


# -- weighted metrics, vectorised over the rows of W (R, N) ----------------------------


def _divide(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b != 0, a / np.where(b != 0, b, 1), np.nan)


def confusion(W, y, p, K):
    """(R, K, K) weighted confusion matrices: [r, i, j] = weight of the discs of true grade i predicted j."""
    onehot = np.zeros((y.size, K * K))
    onehot[np.arange(y.size), y * K + p] = 1.0
    return (W @ onehot).reshape(-1, K, K)


def weighted_mae(W, y, p):
    return _divide(W @ np.abs(y - p).astype(np.float64), W.sum(1))


def weighted_balanced_accuracy(C):
    """Mean recall over the grades present (scikit-learn's definition)."""
    support = C.sum(2)
    recall = _divide(np.diagonal(C, axis1=1, axis2=2), support)
    present = support > 0
    return _divide(np.where(present, recall, 0).sum(1), present.sum(1))


def weighted_qwk(C):
    """Cohen's kappa with quadratic weights; nan where the expected disagreement is 0 (as scikit-learn)."""
    K = C.shape[1]
    n = C.sum((1, 2))
    expected = _divide(C.sum(2)[:, :, None] * C.sum(1)[:, None, :], n[:, None, None])
    i, j = np.indices((K, K))
    penalty = (i - j) ** 2
    return 1.0 - _divide((penalty * C).sum((1, 2)), (penalty * expected).sum((1, 2)))


def weighted_mcc(C):
    """Multiclass Matthews correlation (Gorodkin's R_K, scikit-learn's formula); 0 where undefined."""
    s = C.sum((1, 2))
    c = np.trace(C, axis1=1, axis2=2)
    t, p = C.sum(2), C.sum(1)
    numerator = c * s - (t * p).sum(1)
    denominator = np.sqrt((s ** 2 - (p * p).sum(1)) * (s ** 2 - (t * t).sum(1)))
    return np.nan_to_num(_divide(numerator, denominator), nan=0.0)


def _midranks(W, x):
    """(R, N) weighted mid-ranks of x: the weight strictly below each value plus half
    (the weight tied with it + 1), i.e. the average rank of its copies in the
    repeated sample (1-based). Entries of zero weight get a rank too; their
    weight makes them irrelevant."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    start = np.r_[0, np.flatnonzero(np.diff(xs)) + 1]  # first index of each run of equal values
    level = np.repeat(np.arange(start.size), np.diff(np.r_[start, xs.size]))
    cum = np.concatenate([np.zeros((W.shape[0], 1)), np.cumsum(W[:, order], axis=1)], axis=1)
    below = cum[:, start][:, level]
    tied = cum[:, np.r_[start[1:], xs.size]][:, level] - below
    ranks = np.empty_like(below)
    ranks[:, order] = below + (tied + 1) / 2
    return ranks


def weighted_auc(W, positive, score):
    """ROC-AUC of ``score`` for the boolean labels ``positive``: the weighted
    fraction of (positive, negative) pairs ordered by the score, ties one half.
    nan where a side has no weight."""
    ranks = _midranks(W, score)
    wp = W * positive
    n_pos, n_neg = wp.sum(1), (W * ~positive).sum(1)
    # Mann-Whitney: the positives' rank sum minus its minimum, in weighted form.
    u = (wp * ranks).sum(1) - n_pos * (n_pos + 1) / 2
    return _divide(u, n_pos * n_neg)


def weighted_roc_auc_ovr(W, y, probs):
    """One-vs-rest ROC-AUC of each grade's probability, averaged over the grades present; nan with one grade."""
    values = np.stack([weighted_auc(W, y == k, probs[:, k]) for k in range(probs.shape[1])], axis=1)
    present = (W @ (y[:, None] == np.arange(probs.shape[1])).astype(np.float64)) > 0
    values = np.where(present, values, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=1)
    return np.where(present.sum(1) >= 2, mean, np.nan)


def weighted_spearman(W, a, b):
    """Spearman correlation of a and b in the repeated sample: the weighted Pearson
    correlation of their weighted mid-ranks; nan below 3 draws or without spread."""
    ra, rb = _midranks(W, a), _midranks(W, b)
    n = W.sum(1)
    ma, mb = _divide((W * ra).sum(1), n), _divide((W * rb).sum(1), n)
    da, db = ra - ma[:, None], rb - mb[:, None]
    cov = (W * da * db).sum(1)
    var = np.sqrt((W * da * da).sum(1) * (W * db * db).sum(1))
    rho = _divide(cov, var)
    return np.where((n >= 3) & (var > 1e-12 * np.maximum(n, 1) ** 3), rho, np.nan)


def task_values(W, outcome: Outcome, t: int) -> dict[str, np.ndarray]:
    """Task t's metrics for each row of W: (R,) arrays; ``latent_spearman_within``
    is (R, G), one column per grade of the task."""
    keep = outcome.grades[:, t] >= 0
    Wt = W[:, keep]
    y, p = outcome.grades[keep, t].astype(np.int64), outcome.predicted[keep, t].astype(np.int64)
    K = outcome.probs[t].shape[1]
    C = confusion(Wt, y, p, K)
    values = {"qwk": weighted_qwk(C), "mae": weighted_mae(Wt, y, p), "balanced_accuracy": weighted_balanced_accuracy(C),
              "mcc": weighted_mcc(C), "roc_auc": weighted_roc_auc_ovr(Wt, y, outcome.probs[t][keep])}
    if outcome.latent is not None:
        hidden = outcome.latent[keep, t]
        ok = np.isfinite(hidden)
        per_grade = [weighted_spearman(Wt[:, ok & (y == g)], outcome.scores[keep, t][ok & (y == g)],
                                       hidden[ok & (y == g)]) for g in np.unique(y[ok])]
        values["latent_spearman_within"] = np.stack(per_grade, axis=1) if per_grade else np.full((W.shape[0], 0), np.nan)
    return values


def _nanmean(x, axis):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def run_values(W, outcome: Outcome) -> dict[str, np.ndarray]:
    """Per metric: (R, T) per-task values, and the task-mean (R,) under ``mean``.
    The within-grade latent Spearman of a task is the mean over its grades; its
    ``mean`` is over all (task, grade) cells, as ``evaluate`` aggregates it."""
    tasks = [task_values(W, outcome, t) for t in range(outcome.grades.shape[1])]
    out = {}
    for key, _ in PAIRED_METRICS:
        if key == "latent_spearman_within_grade":
            if outcome.latent is None:
                continue
            cells = [v["latent_spearman_within"] for v in tasks]
            per_task = np.stack([_nanmean(c, 1) if c.shape[1] else np.full(W.shape[0], np.nan) for c in cells], 1)
            out[key] = {"tasks": per_task, "mean": _nanmean(np.concatenate(cells, axis=1), 1)}
        else:
            per_task = np.stack([v[key] for v in tasks], axis=1)
            out[key] = {"tasks": per_task, "mean": _nanmean(per_task, 1)}
    return out


# -- the paired bootstrap ----------------------------------------------------------------


def replicate_weights(n: int, replicates: int = REPLICATES, seed: int = SEED) -> np.ndarray:
    """(replicates, n) multiplicities of n discs drawn with replacement, seeded."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=replicates).astype(np.float64)


def _interval(samples):
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return [float("nan"), float("nan")]
    low, high = np.percentile(finite, [2.5, 97.5])
    return [float(low), float(high)]


def paired_differences(runs: dict[str, list[Outcome]], baseline: str = "ce", task_names=None,
                       replicates: int = REPLICATES, seed: int = SEED) -> dict:
    """Method − baseline differences of every PAIRED_METRICS task-mean and per task,
    pooled over seeds, with 95 % paired-bootstrap intervals (module docstring).

    ``runs``: method -> its outcomes, one per seed, in the same seed order for
    every method. Returns {method: {"mean": {metric: {"diff", "ci", "seed_std"}},
    "tasks": {task: {metric: {"diff", "ci"}}}}} for every method but the baseline,
    with the procedure under "procedure"."""
    if baseline not in runs:
        raise ValueError(f"the paired differences are against {baseline!r}, which is not among {sorted(runs)}")
    reference = runs[baseline][0]
    seeds = len(runs[baseline])
    for name, outcomes in runs.items():
        if len(outcomes) != seeds:
            raise ValueError(f"{name} has {len(outcomes)} seeds, {baseline} {seeds}: the comparison is paired by seed")
        for o in outcomes:
            if o.ids.shape != reference.ids.shape or not np.array_equal(o.ids, reference.ids):
                raise ValueError(f"{name}: its runs scored other test discs than {baseline}'s; the comparison "
                                 "is paired over discs (same dataset, split and sequences)")
    n, T = reference.grades.shape
    names = list(task_names) if task_names is not None else [f"task {t}" for t in range(T)]
    W = np.vstack([np.ones((1, n)), replicate_weights(n, replicates, seed)])  # row 0: the test split itself
    values = {name: [run_values(W, o) for o in outcomes] for name, outcomes in runs.items()}
    result = {"baseline": baseline, "seeds": seeds, "replicates": replicates, "bootstrap_seed": seed,
              "discs": n, "procedure": __doc__.split("The procedure (``paired_differences``):")[1].split(
                  "\n\nThe interval")[0].strip(), "methods": {}}
    for name in runs:
        if name == baseline:
            continue
        entry = {"mean": {}, "tasks": {t: {} for t in names}}
        for key, larger in PAIRED_METRICS:
            if key not in values[baseline][0] or key not in values[name][0]:
                continue
            per_seed = np.stack([v[key]["mean"] - b[key]["mean"] for v, b in zip(values[name], values[baseline])])
            pooled = _nanmean(per_seed, 0)
            entry["mean"][key] = {"diff": float(pooled[0]), "ci": _interval(pooled[1:]),
                                  "seed_std": float(np.nanstd(per_seed[:, 0])) if seeds > 1 else float("nan"),
                                  "larger_is_better": larger}
            per_task = _nanmean(np.stack([v[key]["tasks"] - b[key]["tasks"]
                                          for v, b in zip(values[name], values[baseline])]), 0)
            for t, task in enumerate(names):
                entry["tasks"][task][key] = {"diff": float(per_task[0, t]), "ci": _interval(per_task[1:, t])}
        result["methods"][name] = entry
    return result
