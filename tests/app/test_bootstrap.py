"""The paired bootstrap of ``spinerank compare`` (bootstrap.py).

The weighted metrics are checked against scikit-learn/scipy on the repeated
sample they stand for (a disc of weight 3 copied three times), and the whole
procedure against a plain loop over resamples on a small case."""
import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, matthews_corrcoef

from spinerank import bootstrap, metrics


def random_outcome(rng, n=40, num_grades=(3, 5), ids=None, latent=True, quality=0.6):
    """Grades with some unlabelled discs; predictions and scores that follow them more or less."""
    T = len(num_grades)
    grades = np.stack([rng.integers(0, k, n) for k in num_grades], 1)
    grades[rng.random((n, T)) < 0.1] = -1
    truth = np.where(grades >= 0, grades, 0)
    predicted = np.stack([np.where(rng.random(n) < quality, truth[:, t], rng.integers(0, k, n))
                          for t, k in enumerate(num_grades)], 1)
    scores = truth + rng.normal(0, 0.8, (n, T))
    scores[rng.random((n, T)) < 0.1] = 1.0  # ties
    probs = []
    for t, k in enumerate(num_grades):
        logits = -np.abs(scores[:, t, None] - np.arange(k)[None, :]) + rng.normal(0, 0.3, (n, k))
        p = np.exp(logits)
        probs.append(p / p.sum(1, keepdims=True))
    hidden = truth + rng.uniform(0, 1, (n, T)) if latent else None
    if hidden is not None:
        hidden[rng.random((n, T)) < 0.05] = np.nan
    return bootstrap.Outcome(ids=np.array(ids if ids is not None else [f"d{i}" for i in range(n)]), grades=grades,
                             predicted=predicted, scores=scores, probs=probs, latent=hidden)


def plain_task_metrics(outcome, t, index):
    """The evaluation's own metrics of task t on the discs ``index`` (with repeats)."""
    g, p, s = outcome.grades[index, t], outcome.predicted[index, t], outcome.scores[index, t]
    keep = g >= 0
    K = outcome.probs[t].shape[1]
    m = metrics.task_metrics(g[keep], p[keep], s[keep], outcome.probs[t][index][keep], K)
    out = {k: m[k] for k in ("qwk", "mae", "balanced_accuracy", "mcc", "roc_auc")}
    hidden = outcome.latent[index, t]
    ok = keep & np.isfinite(hidden)
    out["within"] = {k: v for k, v in metrics.latent_spearman(s[ok], hidden[ok], g[ok]).items() if k != "overall"}
    return out


class TestWeightedMetrics:
    @pytest.mark.parametrize("seed", range(4))
    def test_integer_weights_equal_the_repeated_sample(self, seed):
        rng = np.random.default_rng(seed)
        outcome = random_outcome(rng)
        n = outcome.grades.shape[0]
        W = np.vstack([np.ones(n), rng.multinomial(n, np.full(n, 1 / n), size=5)]).astype(float)
        for t in range(2):
            got = bootstrap.task_values(W, outcome, t)
            for r in range(W.shape[0]):
                index = np.repeat(np.arange(n), W[r].astype(int))
                expected = plain_task_metrics(outcome, t, index)
                for key in ("qwk", "mae", "balanced_accuracy", "mcc", "roc_auc"):
                    np.testing.assert_allclose(got[key][r], expected[key], atol=1e-9, err_msg=f"{key} r={r}")
                grades = np.unique(outcome.grades[index, t][(outcome.grades[index, t] >= 0)
                                                            & np.isfinite(outcome.latent[index, t])])
                within = got["latent_spearman_within"][r]
                observed = np.unique(outcome.grades[:, t][(outcome.grades[:, t] >= 0)
                                                          & np.isfinite(outcome.latent[:, t])])
                for g in grades:
                    column = int(np.flatnonzero(observed == g)[0])
                    np.testing.assert_allclose(within[column], expected["within"][f"grade_{int(g)}"], atol=1e-9,
                                               equal_nan=True, err_msg=f"grade {g} r={r}")

    def test_against_scikit_learn_directly(self):
        rng = np.random.default_rng(7)
        y, p = rng.integers(0, 4, 60), rng.integers(0, 4, 60)
        w = rng.integers(0, 4, 60).astype(float)
        index = np.repeat(np.arange(60), w.astype(int))
        C = bootstrap.confusion(w[None], y, p, 4)
        assert bootstrap.weighted_qwk(C)[0] == pytest.approx(cohen_kappa_score(y[index], p[index], weights="quadratic"))
        assert bootstrap.weighted_mcc(C)[0] == pytest.approx(matthews_corrcoef(y[index], p[index]))
        assert bootstrap.weighted_balanced_accuracy(C)[0] == pytest.approx(balanced_accuracy_score(y[index], p[index]))
        a, b = rng.integers(0, 5, 60).astype(float), rng.normal(size=60)
        assert bootstrap.weighted_spearman(w[None], a, b)[0] == pytest.approx(spearmanr(a[index], b[index]).statistic)

    def test_degenerate_cases_are_nan_as_the_evaluation_says(self):
        W = np.ones((1, 4))
        assert np.isnan(bootstrap.weighted_auc(W, np.array([True] * 4), np.arange(4.0)))[0]
        assert np.isnan(bootstrap.weighted_spearman(np.ones((1, 2)), np.arange(2.0), np.arange(2.0))[0])
        assert np.isnan(bootstrap.weighted_spearman(W, np.ones(4), np.arange(4.0))[0])  # no spread
        C = bootstrap.confusion(W, np.zeros(4, int), np.zeros(4, int), 3)
        assert np.isnan(bootstrap.weighted_qwk(C)[0]) and bootstrap.weighted_mcc(C)[0] == 0


def plain_paired(runs, baseline, replicates, seed):
    """The procedure of bootstrap.paired_differences as a loop over resamples, seeds and tasks."""
    n = runs[baseline][0].grades.shape[0]
    counts = bootstrap.replicate_weights(n, replicates, seed)
    indices = [np.arange(n)] + [np.repeat(np.arange(n), c.astype(int)) for c in counts]

    def task_means(outcome, index):
        """Every metric's mean over tasks (the within-grade Spearman over (task, grade) cells)."""
        per_task = [plain_task_metrics(outcome, t, index) for t in range(outcome.grades.shape[1])]
        means = {}
        for key in ("qwk", "mae", "balanced_accuracy", "mcc", "roc_auc", "within"):
            values = np.array([v for m in per_task for v in (m["within"].values() if key == "within" else [m[key]])],
                              dtype=float)
            means[key] = np.nanmean(values) if np.isfinite(values).any() else np.nan
        return means

    out = {}
    for name in runs:
        if name == baseline:
            continue
        # [replicate][seed] -> metric -> difference
        diffs = []
        for index in indices:
            row = []
            for o, base in zip(runs[name], runs[baseline]):
                mine, theirs = task_means(o, index), task_means(base, index)
                row.append({k: mine[k] - theirs[k] for k in mine})
            diffs.append(row)
        out[name] = {}
        for key in diffs[0][0]:
            pooled = np.array([np.nanmean([d[key] for d in row]) for row in diffs])
            finite = pooled[1:][np.isfinite(pooled[1:])]
            out[name][key] = (pooled[0], np.percentile(finite, [2.5, 97.5]))
    return out


class TestPairedDifferences:
    def test_matches_a_plain_loop(self):
        rng = np.random.default_rng(1)
        runs = {"ce": [random_outcome(rng, n=25, quality=0.5) for _ in range(2)]}
        ids = runs["ce"][0].ids
        for o in runs["ce"][1:]:
            o.ids = ids
        runs["spinerank"] = [random_outcome(rng, n=25, quality=0.7, ids=ids) for _ in range(2)]
        for a, b in zip(runs["spinerank"], runs["ce"]):  # same discs, same truth
            a.grades, a.latent = b.grades, b.latent
        got = bootstrap.paired_differences(runs, "ce", task_names=["A", "B"], replicates=40, seed=3)
        expected = plain_paired(runs, "ce", 40, 3)
        keys = {"within": "latent_spearman_within_grade"}
        for key, (diff, ci) in expected["spinerank"].items():
            entry = got["methods"]["spinerank"]["mean"][keys.get(key, key)]
            assert entry["diff"] == pytest.approx(diff, abs=1e-9), key
            np.testing.assert_allclose(entry["ci"], ci, atol=1e-9, err_msg=key)
        assert got["seeds"] == 2 and got["discs"] == 25 and "with replacement" in got["procedure"]
        assert set(got["methods"]["spinerank"]["tasks"]) == {"A", "B"}

    def test_a_method_against_itself_differs_by_zero(self):
        rng = np.random.default_rng(2)
        run = random_outcome(rng, n=30)
        got = bootstrap.paired_differences({"ce": [run], "copy": [run]}, "ce", replicates=50)
        for entry in got["methods"]["copy"]["mean"].values():
            assert entry["diff"] == 0 and entry["ci"] == [0, 0]

    def test_the_intervals_cover_a_real_difference(self):
        rng = np.random.default_rng(4)
        base = random_outcome(rng, n=200, quality=0.3, latent=False)
        better = bootstrap.Outcome(ids=base.ids, grades=base.grades, predicted=np.where(base.grades >= 0, base.grades,
                                   0), scores=base.scores, probs=base.probs, latent=None)
        got = bootstrap.paired_differences({"ce": [base], "oracle": [better]}, "ce", replicates=200)
        qwk = got["methods"]["oracle"]["mean"]["qwk"]
        assert qwk["ci"][0] > 0 and qwk["diff"] > qwk["ci"][0]
        mae = got["methods"]["oracle"]["mean"]["mae"]
        assert mae["ci"][1] < 0

    def test_unpaired_runs_are_refused(self):
        rng = np.random.default_rng(5)
        a, b = random_outcome(rng, n=10), random_outcome(rng, n=10, ids=[f"x{i}" for i in range(10)])
        with pytest.raises(ValueError, match="other test discs"):
            bootstrap.paired_differences({"ce": [a], "m": [b]}, "ce")
        with pytest.raises(ValueError, match="paired by seed"):
            bootstrap.paired_differences({"ce": [a, a], "m": [a]}, "ce")
        with pytest.raises(ValueError, match="not among"):
            bootstrap.paired_differences({"m": [a]}, "ce")


def test_a_damaged_outcome_file_is_named(tmp_path):
    rng = np.random.default_rng(6)
    path = tmp_path / "outcome.npz"
    np.savez(path, **bootstrap.outcome_arrays(random_outcome(rng, n=5)))
    assert bootstrap.load_outcome(path).grades.shape == (5, 2)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="outcome.npz is not an evaluation's outcome file"):
        bootstrap.load_outcome(path)
    np.savez(path, grades=np.zeros(3))
    with pytest.raises(ValueError, match="not an evaluation's outcome file"):
        bootstrap.load_outcome(path)
