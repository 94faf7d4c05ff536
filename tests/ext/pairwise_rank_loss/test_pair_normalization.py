"""pairwise_rank_loss's pair_normalization option on every path, and against the
published RankNet and DeepRankSVM losses."""
import pytest
import torch

import spinerank_ext as se
from spinerank_ext import reference as ref

from conftest import TASK_KS, make_batch, op_setting, published

ops = torch.ops.spinerank_ext


# ---------------------------------------------------------------------------
# The loss option pair_normalization ("per_kind" | "all"), on every path of the
# op family: the CPU kernels (all pairs, sorted all pairs, mining), the CUDA
# backend's generic sorted path run on the CPU, the reference, the module, and
# against the published RankNet and DeepRankSVM written out plainly from the
# published code's definitions:
#
# * RankNet: per task, sum over ordinal pairs of w * softplus(-sigma * r * delta),
#   divided by the number of pairs of the task (same-grade pairs add 0);
# * DeepRankSVM: per task, the mean over all pairs of
#   w * [p * max(0, m - r * delta)^2 + C2 * (1 - p) * delta^2], where p = 1 for
#   an ordinal pair and w = S * |d| / (K - 1), which is 0 for same-grade pairs:
#   the similarity term vanishes;
#
# both averaged over the tasks with pairs (conftest.published).

PUBLISHED_OPTIONS = {
    "ranknet": dict(pair_fn="logistic", sigma=2.0, lambda_sim=0.0, pair_normalization="all"),
    "deeprank": dict(pair_fn="squared_hinge", margin_base=2.0, margin_scale=0.0, lambda_sim=0.0,
                     pair_normalization="all"),
}


def value_and_grad(fn, scores, *args, **kw):
    x = scores.detach().clone().requires_grad_()
    loss = fn(x, *args, **kw)
    (g,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), g


class TestPairNormalizationAgainstThePublishedLosses:
    @pytest.mark.parametrize("kind", ["ranknet", "deeprank"])
    @pytest.mark.parametrize("B", [2, 7, 32])
    def test_fused_and_reference_equal_the_published_loss(self, kind, B):
        ks = (5, 4, 3)
        scores, grades = make_batch(B, ks, seed=B, missing=0.2)
        expected, expected_grad = value_and_grad(published, scores, grades, ks, kind)
        for impl in (se.pairwise_rank_loss, ref.pairwise_rank_loss):
            loss, grad = value_and_grad(impl, scores, grades, ks, **PUBLISHED_OPTIONS[kind])
            torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)

    def test_the_published_setting_b32_and_500_pairs(self):
        # B = 32 over the 11 tasks, as in the paper; with the hard pairs only, the
        # kept set is deterministic and the reference can be given the same pairs.
        scores, grades = make_batch(32, TASK_KS, seed=11)
        for kind, options in PUBLISHED_OPTIONS.items():
            kw = dict(options, max_pairs=500, hard_fraction=1.0)
            pairs = se.mined_pairs(scores, grades, TASK_KS, max_pairs=500, hard_fraction=1.0,
                                   margin_base=kw.get("margin_base", 0.5), margin_scale=kw.get("margin_scale", 1.5))
            loss, grad = value_and_grad(se.pairwise_rank_loss, scores, grades, TASK_KS, **kw)
            expected, expected_grad = value_and_grad(ref.pairwise_rank_loss, scores, grades, TASK_KS,
                                                     **options, pairs=pairs)
            torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)

    def test_per_kind_differs_from_all_by_the_pair_counts(self):
        # One task: grades 0, 0, 1, 2 -> 5 ordinal pairs and 1 similar pair.
        scores = torch.tensor([[1.0], [2.0], [1.5], [3.0]], dtype=torch.float64)
        grades = torch.tensor([[0], [0], [1], [2]])
        kw = dict(lambda_sim=0.25)
        per_kind, counts = se.pairwise_rank_loss(scores, grades, 3, return_counts=True, **kw)
        everything = se.pairwise_rank_loss(scores, grades, 3, pair_normalization="all", **kw)
        assert counts.tolist() == [[5, 1]]
        sim_sum = (1.0 - 2.0) ** 2
        dis_sum = (per_kind.item() - 0.25 * sim_sum) * 5
        assert everything.item() == pytest.approx((dis_sum + 0.25 * sim_sum) / 6, rel=1e-14)


class TestPairNormalizationOnEveryPath:
    @pytest.mark.parametrize("pair_fn", ["squared_hinge", "logistic"])
    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    @pytest.mark.parametrize("sorted_path", [False, True])
    def test_all_pairs_match_the_reference(self, pair_fn, reduction, sorted_path):
        scores, grades = make_batch(64, TASK_KS, seed=3, missing=0.3)
        kw = dict(pair_fn=pair_fn, task_reduction=reduction, pair_normalization="all", lambda_sim=0.4)
        expected, expected_grad = value_and_grad(ref.pairwise_rank_loss, scores, grades, TASK_KS, **kw)
        with op_setting(ops._sorted_pairs_min_n, 0 if sorted_path else 1 << 40):
            loss, grad = value_and_grad(se.pairwise_rank_loss, scores, grades, TASK_KS, **kw)
        torch.testing.assert_close(loss, expected, rtol=1e-11, atol=1e-12)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-11, atol=1e-12)

    @pytest.mark.parametrize("reduction", ["mean", "none"])
    def test_the_cuda_sorted_path_run_on_the_cpu(self, reduction):
        scores, grades = make_batch(50, TASK_KS, seed=4, missing=0.3)
        x = scores.clone().requires_grad_()
        expected = ref.pairwise_rank_loss(x, grades, TASK_KS, task_reduction=reduction, pair_normalization="all")
        expected.sum().backward()
        loss, grad, _ = ops._sorted_hinge_generic(scores, grades, list(TASK_KS), 10.0, 0.5, 1.5, 1.0, 0.25, True,
                                                  reduction, "all")
        torch.testing.assert_close(loss, expected.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, x.grad, rtol=1e-12, atol=1e-12)

    @pytest.mark.parametrize("hard_fraction", [0.0, 0.7, 1.0])
    def test_mining_matches_the_reference_on_the_same_pairs(self, hard_fraction):
        scores, grades = make_batch(48, TASK_KS, seed=5)
        kw = dict(max_pairs=60, hard_fraction=hard_fraction)
        pairs = se.mined_pairs(scores, grades, TASK_KS, generator=3, **kw)
        loss, grad = value_and_grad(se.pairwise_rank_loss, scores, grades, TASK_KS, generator=3,
                                    pair_normalization="all", **kw)
        expected, expected_grad = value_and_grad(ref.pairwise_rank_loss, scores, grades, TASK_KS, pairs=pairs,
                                                 pair_normalization="all")
        torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)

    def test_module_matches_functional_and_shows_the_option(self):
        scores, grades = make_batch(20, TASK_KS, seed=6)
        module = se.PairwiseRankLoss(TASK_KS, pair_normalization="all", pair_fn="logistic", sigma=2.0)
        expected = se.pairwise_rank_loss(scores, grades, TASK_KS, pair_normalization="all", pair_fn="logistic",
                                         sigma=2.0)
        torch.testing.assert_close(module(scores, grades), expected, rtol=0, atol=0)
        assert "pair_normalization='all'" in repr(module)

    def test_default_is_per_kind(self):
        scores, grades = make_batch(20, TASK_KS, seed=7)
        assert torch.equal(se.pairwise_rank_loss(scores, grades, TASK_KS),
                           se.pairwise_rank_loss(scores, grades, TASK_KS, pair_normalization="per_kind"))
        # The schema's default: a direct call without the argument is "per_kind".
        direct = ops.pairwise_rank_loss(scores, grades, list(TASK_KS), 10.0, 0.5, 1.5, 1.0, 0.25, True,
                                        "squared_hinge", 1.0, -1, 0.7, "mean", None)[0]
        assert torch.equal(direct, se.pairwise_rank_loss(scores, grades, TASK_KS))


class TestPairNormalizationRegistration:
    def args(self, scores, grades, max_pairs=-1, seed=None):
        return (scores, grades, list(TASK_KS), 10.0, 0.5, 1.5, 1.0, 0.25, True, "squared_hinge", 1.0, max_pairs,
                0.7, "mean", seed, "all")

    @pytest.mark.parametrize("mining", [False, True])
    def test_opcheck(self, mining):
        scores, grades = make_batch(20, TASK_KS, seed=8)
        args = self.args(scores.requires_grad_(), grades, 30 if mining else -1, torch.tensor(4) if mining else None)
        torch.library.opcheck(ops.pairwise_rank_loss.default, args)

    @pytest.mark.parametrize("pair_fn", ["squared_hinge", "logistic"])
    def test_gradcheck(self, pair_fn):
        g = torch.Generator().manual_seed(0)
        scores = (torch.randperm(36, generator=g).reshape(12, 3).double() * 0.37).requires_grad_()
        grades = torch.randint(0, 3, (12, 3), generator=g)

        def fn(s):
            return se.pairwise_rank_loss(s, grades, 3, pair_fn=pair_fn, pair_normalization="all")

        assert torch.autograd.gradcheck(fn, (scores,), eps=1e-6, atol=1e-7)

    def test_compile_fullgraph(self):
        scores, grades = make_batch(24, TASK_KS, seed=9, dtype=torch.float32)

        def step(s, y):
            return se.pairwise_rank_loss(s, y, TASK_KS, pair_normalization="all", max_pairs=40, generator=1)

        x = scores.clone().requires_grad_()
        xc = scores.clone().requires_grad_()
        eager = step(x, grades)
        compiled = torch.compile(step, fullgraph=True)(xc, grades)
        torch.testing.assert_close(compiled, eager)
        eager.backward()
        compiled.backward()
        torch.testing.assert_close(xc.grad, x.grad)

    def test_bad_value_is_named(self):
        scores, grades = make_batch(6, TASK_KS, seed=10)
        message = r"pair_normalization must be one of \('per_kind', 'all'\), got 'mean'"
        for impl in (se.pairwise_rank_loss, ref.pairwise_rank_loss):
            with pytest.raises(ValueError, match=message):
                impl(scores, grades, TASK_KS, pair_normalization="mean")
        with pytest.raises(ValueError, match=message):
            se.PairwiseRankLoss(TASK_KS, pair_normalization="mean")
        with pytest.raises(ValueError, match=r"pair_normalization must be 'per_kind' or 'all', got 'mean'"):
            ops.pairwise_rank_loss(*self.args(scores, grades)[:-1], "mean")
