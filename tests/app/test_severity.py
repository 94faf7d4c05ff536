"""The calibrated severity scale (spinerank.severity): a strictly increasing
piecewise-linear map of the raw score that sends threshold k to (k - ½) S / (K - 1),
so the severity grades like the thresholds, for every score."""

import numpy as np
import pytest
from scipy.stats import kendalltau, spearmanr

from spinerank import severity as severity_lib
from spinerank.metrics import fixed_thresholds, grades_from_scores
from spinerank.severity import SeverityMap, boundaries

S = 10.0


def probe_scores(tau, rng, scale=S):
    """Dense random scores on [0, S] and just beyond, every threshold, its
    neighbouring floats, and the ends."""
    tau = np.asarray(tau, dtype=np.float64)
    near = np.concatenate([tau, np.nextafter(tau, np.inf), np.nextafter(tau, -np.inf),
                           np.nextafter(np.nextafter(tau, np.inf), np.inf)])
    return np.concatenate([rng.uniform(-0.5, scale + 0.5, 20000), rng.uniform(0, scale, 20000), near,
                           [0.0, scale, np.nextafter(0.0, 1), np.nextafter(scale, 0)]])


def assert_grades_like_thresholds(tau, K, scale=S, seed=0):
    m = SeverityMap.from_thresholds(tau, K, scale)
    s = probe_scores(tau, np.random.default_rng(seed), scale)
    v = m(s)
    np.testing.assert_array_equal(grades_from_scores(v, boundaries(K, scale)), grades_from_scores(s, tau))
    order = np.argsort(s, kind="stable")
    assert (np.diff(v[order]) >= 0).all()  # monotone (strictly, up to float rounding)
    return m, s, v


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("K", [2, 3, 4, 5])
def test_random_thresholds_grade_like_the_boundaries_and_land_on_them(K, seed):
    rng = np.random.default_rng(seed)
    tau = np.sort(rng.uniform(0.2, 9.8, K - 1))
    m, s, v = assert_grades_like_thresholds(tau, K, seed=seed)
    b = (np.arange(1, K) - 0.5) * S / (K - 1)
    np.testing.assert_array_equal(m(tau), b)  # exactly, not approximately
    np.testing.assert_array_equal(b, boundaries(K, S))
    assert m(0.0) == 0.0 and m(S) == S  # endpoints
    inside = (s >= 0) & (s <= S)
    assert v[inside].min() >= 0 and v[inside].max() <= S
    # strictly increasing between distinct scores a float grid apart
    grid = np.linspace(0, S, 5001)
    assert (np.diff(m(grid)) > 0).all()
    # piecewise linear through the knots: np.interp agrees
    np.testing.assert_allclose(m(grid), np.interp(grid, [0, *tau, S], [0, *b, S]), rtol=0, atol=1e-12)


def test_ranks_and_rank_metrics_are_unchanged():
    rng = np.random.default_rng(1)
    grades = rng.integers(0, 4, 500)
    scores = np.clip(grades * 3 + rng.normal(0, 2, 500), 0, S)
    m = SeverityMap.from_thresholds([1.7, 3.1, 8.9], 4)
    v = m(scores)
    np.testing.assert_array_equal(np.argsort(v, kind="stable"), np.argsort(scores, kind="stable"))
    assert spearmanr(v, grades).statistic == pytest.approx(spearmanr(scores, grades).statistic, abs=1e-12)
    assert kendalltau(v, grades).statistic == pytest.approx(kendalltau(scores, grades).statistic, abs=1e-12)


def test_fixed_thresholds_give_the_identity():
    for K in (2, 3, 4, 5):
        for scale in (10.0, 1.0, 7.5):
            m = SeverityMap.from_thresholds(fixed_thresholds(K, scale), K, scale)
            assert m.is_identity and SeverityMap.identity(K, scale) == m
            s = np.random.default_rng(K).uniform(-1, scale + 1, 1000)
            np.testing.assert_array_equal(m(s), s)
    assert not SeverityMap.from_thresholds([2.0, 6.0], 3).is_identity


@pytest.mark.parametrize("tau", [
    [4.0, 4.0, 7.0],          # an empty grade: equal thresholds
    [3.0, 3.0, 3.0],          # three equal
    [0.0, 5.0, 6.0],          # a threshold at 0
    [-1e-300, 2.0, 6.0],      # just below 0 (within_scores below a score of 0)
    [np.nextafter(0, -1), 0.0, 6.0],
    [2.0, 6.0, 10.0],         # a threshold at S
    [2.0, 10.0, 10.0],
    [2.0, 6.0, 12.0],         # beyond S
    [0.0, 0.0, 10.0],
    [1e-300, 5.0, 9.999999999999998],
    [5.0, 5.0 + 1e-15, 5.0 + 2e-15],   # thresholds a few ulps apart
    [0.001, 9.99, 9.999],     # slopes far from 1 next to each other
])
def test_degenerate_thresholds_still_grade_like_the_thresholds(tau):
    m, s, v = assert_grades_like_thresholds(tau, 4)
    tau = np.asarray(tau)
    b = boundaries(4, S)
    # A score equal to a threshold sits at (or, for equal thresholds, the lowest of) its boundaries.
    first = np.searchsorted(tau, tau, side="left")
    np.testing.assert_array_equal(m(tau), b[first])
    # The map is non-decreasing everywhere and strictly increasing across grades.
    g = grades_from_scores(s, tau)
    for k in np.unique(g)[:-1]:
        assert v[g == k].max() < v[g > k].min()


def test_equal_thresholds_make_a_jump_over_the_empty_grade():
    m = SeverityMap.from_thresholds([4.0, 4.0, 7.0], 4)
    b = boundaries(4, S)
    assert m(4.0) == b[0]
    above = m(np.nextafter(4.0, 5))
    assert b[1] < above < b[1] + 1e-9
    assert m(0.0) == 0.0 and m(S) == S


def test_end_knots_yield_to_thresholds_at_the_ends():
    m = SeverityMap.from_thresholds([0.0, 5.0, 6.0], 4)
    assert m.x[0] == 0.0 and m.y[0] == boundaries(4, S)[0]  # no (0, 0) knot: score 0 is at threshold 1
    assert m(0.0) == boundaries(4, S)[0] and m(-1.0) == boundaries(4, S)[0] - 1.0  # slope 1 beyond
    m = SeverityMap.from_thresholds([2.0, 6.0, 10.0], 4)
    assert m.x[-1] == S and m.y[-1] == boundaries(4, S)[-1]
    assert m(11.0) == pytest.approx(boundaries(4, S)[-1] + 1.0)


def test_bad_thresholds_and_knots_are_refused():
    with pytest.raises(ValueError, match="3 thresholds"):
        SeverityMap.from_thresholds([1.0, 2.0], 4)
    with pytest.raises(ValueError, match="non-decreasing"):
        SeverityMap.from_thresholds([3.0, 2.0, 5.0], 4)
    with pytest.raises(ValueError, match="finite"):
        SeverityMap.from_thresholds([1.0, np.nan, 5.0], 4)
    with pytest.raises(ValueError, match="strictly increasing"):
        SeverityMap((0.0, 1.0), (1.0, 1.0))


def test_one_map_per_task_from_its_thresholds():
    tau = [[1.23456789012345, 4.56, 7.0], [2.5]]
    maps = [SeverityMap.from_thresholds(tau[0], 4), SeverityMap.from_thresholds(tau[1], 2)]
    assert severity_lib.maps_for(tau, [4, 2], S) == maps
    with pytest.raises(ValueError, match="2 grades need 1 thresholds"):
        severity_lib.maps_for([tau[0], [3.0, 4.0]], [4, 2], S)
    scores = np.array([[0.0, 2.5], [4.56, 9.0]])
    np.testing.assert_array_equal(severity_lib.severities(scores, maps),
                                  [[0.0, 5.0], [boundaries(4, S)[1], maps[1](9.0)]])
