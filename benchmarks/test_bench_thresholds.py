"""Threshold search (SPEC §8): the vectorised grid search against the same search
scored by scikit-learn one candidate at a time.

    pytest benchmarks/test_bench_thresholds.py --benchmark-json=benchmarks/results/cpu-thresholds.json
    python benchmarks/render_table.py benchmarks/results/cpu-thresholds.json

One task's validation scores (2000, grades uniform over K = 4 or 5, scores
= grade * 10 / (K - 1) plus Gaussian noise of 1.5), composite objective, with
the Nelder-Mead polish. ``spinerank.thresholds.fit_thresholds`` against
``fit_thresholds_sklearn``; both pick the same thresholds (checked). The
scikit-learn search takes ~30 s per fit, so it is timed over one round; the
untimed smoke run uses 200 scores for it, K = 4 only. Peak extra memory (benchmarks/memory.py)
is measured for the vectorised search only.
"""
import pathlib

import numpy as np
import pytest

from spinerank.thresholds import fit_thresholds, fit_thresholds_sklearn

from memory import measure_case

IMPLS = {"vectorised": fit_thresholds, "sklearn": fit_thresholds_sklearn}
N_SCORES = 2000


def task(n, K, seed=0):
    rng = np.random.default_rng(seed)
    grades = rng.integers(0, K, n)
    return grades * 10.0 / (K - 1) + rng.normal(0.0, 1.5, n), grades


def make_step(impl, n, K):
    scores, grades = task(n, K)
    return lambda: IMPLS[impl](scores, grades, K)


@pytest.mark.parametrize("K", [4, 5])
@pytest.mark.parametrize("impl", list(IMPLS))
def test_fit_thresholds(benchmark, request, impl, K):
    smoke = request.config.getoption("benchmark_disable")
    if smoke and impl == "sklearn" and K == 5:
        pytest.skip("~20 s even on 200 scores; K = 4 covers the case in the smoke run")
    n = 200 if smoke and impl == "sklearn" else N_SCORES
    step = make_step(impl, n, K)
    make_step(impl, 50, K)()  # imports (scipy, scikit-learn) outside the timing
    benchmark.group = f"fit_thresholds, {n} scores, K={K}, composite"
    benchmark.extra_info.update(op="fit_thresholds", impl=impl, n=n, K=K)
    if impl == "sklearn":
        thresholds = benchmark.pedantic(step, rounds=1, iterations=1)
        # The same search: the same thresholds.
        np.testing.assert_allclose(thresholds, make_step("vectorised", n, K)(), rtol=0, atol=1e-9)
    else:
        thresholds = benchmark(step)
        if not smoke and request.config.getoption("--bench-large"):  # a fresh process: make bench only
            benchmark.extra_info["peak_extra_bytes"] = measure_case(pathlib.Path(__file__), "make_step",
                                                                    impl=impl, n=n, K=K)
    assert thresholds.shape == (K - 1,) and np.all(np.diff(thresholds) > 0)
