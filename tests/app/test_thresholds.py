"""Threshold fitting (SPEC §8): the vectorised search against the same search
scored candidate by candidate with scikit-learn, the objectives against
scikit-learn, and the alternatives on separable data."""
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, mean_absolute_error

from spinerank import thresholds as th


def cohort(K, n, seed, noise=2.0, decimals=1):
    rng = np.random.default_rng(seed)
    grades = rng.choice(K, n, p=np.r_[0.6, np.full(K - 1, 0.4 / (K - 1))])
    scores = np.round(grades * 10 / (K - 1) + rng.normal(0, noise, n), decimals)  # rounding makes ties
    return scores, grades


def test_a_score_on_a_threshold_takes_the_lower_grade():
    assert th.grades_from_scores([0.0, 1.0, 1.0001, 5.0, 9.0], [1.0, 5.0]).tolist() == [0, 0, 1, 1, 2]


@pytest.mark.parametrize("objective", th.OBJECTIVES)
def test_objective_matches_scikit_learn(objective):
    rng = np.random.default_rng(1)
    for K in (2, 3, 5):
        for _ in range(20):
            y = rng.integers(0, K, 40)
            p = rng.integers(0, K, 40) if rng.random() < 0.8 else np.full(40, rng.integers(0, K))
            confusion = np.zeros((K, K))
            np.add.at(confusion, (y, p), 1)
            assert th.objective_from_confusion(confusion, objective) == pytest.approx(
                th.sklearn_objective(y, p, K, objective), abs=1e-12)


def test_composite_by_hand():
    y, p = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0])
    ba = balanced_accuracy_score(y, p)
    qwk = cohen_kappa_score(y, p, weights="quadratic", labels=[0, 1, 2])
    expected = 0.5 * ba + 0.3 * max(qwk, 0) + 0.2 * (1 - mean_absolute_error(y, p) / 2)
    assert ba == pytest.approx((0.5 + 1 + 0) / 3)
    assert th.sklearn_objective(y, p, 3, "composite") == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("K,n,seed", [(2, 30, 0), (3, 60, 1), (4, 80, 2), (5, 70, 3)])
@pytest.mark.parametrize("objective", th.OBJECTIVES)
def test_vectorised_search_picks_the_sklearn_thresholds(monkeypatch, K, n, seed, objective):
    # Smaller grids keep the one-by-one search fast; the algorithm is the same.
    monkeypatch.setattr(th, "COARSE_POINTS", 40)
    monkeypatch.setattr(th, "FINE_POINTS", 50)
    scores, grades = cohort(K, n, seed)
    fast = th.fit_thresholds(scores, grades, K, objective=objective)
    slow = th.fit_thresholds_sklearn(scores, grades, K, objective=objective)
    np.testing.assert_array_equal(fast, slow)
    assert np.all(np.diff(fast) >= 0)


def test_full_size_search_matches_sklearn_without_polish():
    scores, grades = cohort(3, 40, 4)
    np.testing.assert_array_equal(th.fit_thresholds(scores, grades, 3, polish=False),
                                  th.fit_thresholds_sklearn(scores, grades, 3, polish=False))


def test_grid_search_beats_the_fixed_thresholds_and_polish_never_hurts():
    scores, grades = cohort(4, 400, 5, noise=2.5)
    task = th._Task(scores, grades, 4, "composite")
    fitted = th.fit_thresholds(scores, grades, 4)
    assert task.value(fitted) >= task.value(th.fit_thresholds(scores, grades, 4, polish=False))
    assert task.value(fitted) > task.value((np.arange(3) + 0.5) * 10 / 3)


@pytest.mark.parametrize("method", th.METHODS)
def test_every_method_recovers_separable_grades(method):
    scores, grades = cohort(4, 400, 6, noise=0.3, decimals=3)
    t = th.fit_thresholds(scores, grades, 4, method=method)
    assert t.shape == (3,) and np.all(np.diff(t) >= 0)
    assert balanced_accuracy_score(grades, th.grades_from_scores(scores, t)) > 0.97


def imbalanced_or_compressed(K, seed, kind):
    """Score sets like trained heads give: grades 70/15/10/5 % (K = 4) or
    decaying prevalences, and scores squeezed into [0, 3.7] with overlapping grades."""
    rng = np.random.default_rng(seed)
    p = np.r_[0.7, np.full(K - 1, 0.3 / (K - 1))] if K != 4 else np.array([0.7, 0.15, 0.10, 0.05])
    n = int(rng.integers(40, 300))
    grades = rng.choice(K, n, p=p)
    if kind == "compressed":
        scores = 3.7 * (grades + rng.normal(0, 0.8, n)).clip(0, K - 1) / (K - 1)
    else:
        scores = (grades * 10 / (K - 1) + rng.normal(0, 2.5, n)).clip(0, 10)
    return np.round(scores, 2), grades


@pytest.mark.parametrize("method", th.METHODS)
@pytest.mark.parametrize("kind", ["imbalanced", "compressed"])
def test_every_method_gives_sorted_finite_thresholds_within_the_scores(method, kind):
    for K in (2, 3, 4, 5):
        for seed in range(8):
            scores, grades = imbalanced_or_compressed(K, seed, kind)
            t = th.fit_thresholds(scores, grades, K, method=method)
            assert t.shape == (K - 1,) and np.isfinite(t).all(), (K, seed, t)
            assert np.all(np.diff(t) >= 0), (K, seed, t)
            assert np.nextafter(scores.min(), -np.inf) <= t.min() and t.max() <= scores.max(), (K, seed, t)


def test_gmm_on_the_reported_imbalanced_case_is_sorted_and_inside():
    # K = 4, grades 70/15/10/5 %: the first grid point could belong to a higher
    # component, and grid[first - 1] wrapped to the grid's end (e.g. [10.5, 2.915, 8.05]).
    hits = 0
    for seed in range(16):
        scores, grades = imbalanced_or_compressed(4, seed, "imbalanced")
        t = th.fit_thresholds(scores, grades, 4, method="gmm")
        hits += bool(np.all(np.diff(t) >= 0) and t.max() <= scores.max())
    assert hits == 16


def test_gmm_boundary_of_two_equal_components_is_midway():
    rng = np.random.default_rng(0)
    scores = np.r_[rng.normal(2.0, 0.5, 2000), rng.normal(8.0, 0.5, 2000)]
    grades = np.r_[np.zeros(2000, int), np.ones(2000, int)]
    assert th.fit_thresholds(scores, grades, 2, method="gmm")[0] == pytest.approx(5.0, abs=0.1)


def test_moving_grid_thresholds_inside_the_scores_keeps_the_fit():
    scores, grades = imbalanced_or_compressed(4, 3, "compressed")
    task = th._Task(scores, grades, 4, "composite")
    beyond = np.array([scores.min() - 3.0, scores.max() + 1.0, scores.max() + 2.0])
    assert task.value(th.within_scores(beyond, scores)) == task.value(beyond)
    assert th.within_scores(beyond, scores).tolist() == [np.nextafter(scores.min(), -np.inf), scores.max(),
                                                          scores.max()]


@pytest.mark.parametrize("args,message", [
    (([0.1, 0.2], [0], 3), "differ in length"),
    (([0.1, 0.2], [0, 3], 3), r"integers in 0..2"),
    (([0.1, float("nan")], [0, 1], 3), "non-finite"),
    (([], [], 3), "no validation scores"),
    (([0.1], [0], 1), "num_grades must be an int >= 2"),
])
def test_bad_inputs(args, message):
    with pytest.raises(ValueError, match=message):
        th.fit_thresholds(*args)


def test_bad_objective_and_method():
    with pytest.raises(ValueError, match="objective must be one of"):
        th.fit_thresholds([0.0, 1.0], [0, 1], 2, objective="f1")
    with pytest.raises(ValueError, match="method must be one of"):
        th.fit_thresholds([0.0, 1.0], [0, 1], 2, method="otsu")
