"""pairwise_rank_loss: values, gradients and pair counts against the reference
and hand-computed cases.

Mining (max_pairs) and mined_pairs: tests/ext/test_mined_pairs.py.
"""
import itertools

import pytest
import torch

import spinerank_ext as se
from spinerank_ext import reference as ref

from conftest import TASK_KS, make_batch


REDUCTIONS = ("mean", "sum", "none")
PAIR_FNS = ("squared_hinge", "logistic")


def loss_and_grad(fn, scores, grades, ks, upstream=None, **kw):
    x = scores.detach().clone().requires_grad_()
    loss, counts = fn(x, grades, ks, return_counts=True, **kw)
    weights = torch.ones_like(loss) if upstream is None else upstream
    (loss * weights).sum().backward()
    return loss.detach(), x.grad, counts


class TestValues:
    """Fused loss values, gradients and counts against the plain reference and hand-computed cases."""

    @pytest.mark.parametrize("K", [2, 3, 4, 5])
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("pair_fn", PAIR_FNS)
    @pytest.mark.parametrize("severity_weight", [True, False])
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_matches_reference(self, K, reduction, pair_fn, severity_weight, dtype):
        ks = (K,) * 3
        scores, grades = make_batch(37, ks, seed=K, dtype=dtype)
        upstream = torch.rand(3, dtype=dtype) + 0.5 if reduction == "none" else None
        kw = dict(task_reduction=reduction, pair_fn=pair_fn, severity_weight=severity_weight)
        loss, grad, counts = loss_and_grad(se.pairwise_rank_loss, scores, grades, ks, upstream, **kw)
        # The fused op accumulates in float64 whatever the dtype: compare against a
        # float64 reference, within the rounding of the output dtype.
        up64 = None if upstream is None else upstream.double()
        loss_r, grad_r, counts_r = loss_and_grad(ref.pairwise_rank_loss, scores.double(), grades, ks, up64, **kw)
        tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-6, atol=1e-6)
        assert loss.dtype == dtype and grad.dtype == dtype
        torch.testing.assert_close(loss, loss_r.to(dtype), **tol)
        torch.testing.assert_close(grad, grad_r.to(dtype), **tol)
        assert torch.equal(counts, counts_r)

    @pytest.mark.parametrize("B", [2, 5, 64, 300])
    def test_matches_reference_on_the_task_table(self, B):
        scores, grades = make_batch(B, TASK_KS, seed=B, missing=0.3)
        for kw in [{}, dict(lambda_dis=0.3, lambda_sim=2.0, scale=4.0, margin_base=0.1, margin_scale=3.0),
                   dict(pair_fn="logistic", sigma=0.7, lambda_sim=0.0),  # RankNet
                   dict(margin_base=2.0, margin_scale=0.0)]:  # DeepRankSVM
            loss, grad, counts = loss_and_grad(se.pairwise_rank_loss, scores, grades, TASK_KS, **kw)
            loss_r, grad_r, counts_r = loss_and_grad(ref.pairwise_rank_loss, scores, grades, TASK_KS, **kw)
            torch.testing.assert_close(loss, loss_r, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(grad, grad_r, rtol=1e-12, atol=1e-12)
            assert torch.equal(counts, counts_r)

    def test_hand_computed_case(self):
        # One task, K = 3. Pairs (row, row): (0,1) d=1 g=.5 w=5 m=1.25 rdelta=1 -> 5*.25^2
        # (3,1) rdelta=.5 -> 5*.75^2; (0,2), (1,2), (3,2) satisfied; (0,3) similar, delta=-.5.
        scores = torch.tensor([[0.0], [1.0], [5.0], [0.5]], dtype=torch.float64, requires_grad=True)
        grades = torch.tensor([[0], [1], [2], [0]])
        loss, counts = se.pairwise_rank_loss(scores, grades, 3, return_counts=True)
        expected = (5 * 0.25**2 + 5 * 0.75**2) / 5 + 0.25 * 0.5**2 / 1
        assert loss.item() == pytest.approx(expected, rel=1e-15)
        assert counts.tolist() == [[5, 1]]
        loss.backward()
        # d/ds of the hinge terms: -2*w*h*(d rdelta/ds) / n_dis; of the similar term 2*delta*lambda_sim.
        g0 = 2 * 5 * 0.25 / 5 + 0.25 * 2 * (0.0 - 0.5)
        g1 = -2 * 5 * 0.25 / 5 - 2 * 5 * 0.75 / 5
        g3 = 2 * 5 * 0.75 / 5 + 0.25 * 2 * (0.5 - 0.0)
        torch.testing.assert_close(scores.grad.flatten(), torch.tensor([g0, g1, 0.0, g3], dtype=torch.float64))

    def test_logistic_hand_computed(self):
        scores = torch.tensor([[2.0], [0.5]], dtype=torch.float64)
        grades = torch.tensor([[0], [3]])  # K = 4: g = 1, w = S = 10; rdelta = 0.5 - 2 = -1.5
        loss = se.pairwise_rank_loss(scores, grades, 4, pair_fn="logistic", sigma=2.0)
        expected = 10 * torch.nn.functional.softplus(torch.tensor(2.0 * 1.5, dtype=torch.float64))
        assert loss.item() == pytest.approx(expected.item(), rel=1e-15)

    def test_mean_is_over_tasks_with_pairs(self):
        scores, grades = make_batch(10, (4, 4, 4), seed=1, missing=0.0)
        grades[:, 1] = -1  # no valid sample
        grades[1:, 2] = -1  # a single valid sample: no pair
        per_task = se.pairwise_rank_loss(scores, grades, 4, task_reduction="none")
        assert per_task[1] == 0 and per_task[2] == 0
        mean = se.pairwise_rank_loss(scores, grades, 4)
        assert mean.item() == pytest.approx(per_task[0].item())
        total = se.pairwise_rank_loss(scores, grades, 4, task_reduction="sum")
        assert total.item() == pytest.approx(per_task.sum().item())

    @pytest.mark.parametrize("B", [0, 1])
    def test_tiny_batches_give_zero_loss_and_gradient(self, B):
        scores = torch.randn(B, 11, dtype=torch.float64, requires_grad=True)
        grades = torch.zeros(B, 11, dtype=torch.long)
        for reduction in REDUCTIONS:
            loss, counts = se.pairwise_rank_loss(scores, grades, TASK_KS, task_reduction=reduction, return_counts=True)
            assert torch.isfinite(loss).all() and (loss == 0).all()
            assert counts.shape == (11, 2) and (counts == 0).all()
            loss.sum().backward()
            assert scores.grad is None or (scores.grad == 0).all()

    def test_all_missing_gives_zero_loss_and_gradient(self):
        scores = torch.randn(16, 3, dtype=torch.float64, requires_grad=True)
        grades = torch.full((16, 3), -1)
        loss = se.pairwise_rank_loss(scores, grades, 4, max_pairs=5)
        loss.backward()
        assert loss.item() == 0 and (scores.grad == 0).all()

    def test_missing_rows_get_no_gradient(self):
        scores, grades = make_batch(20, (4, 4), seed=3, missing=0.4)
        _, grad, _ = loss_and_grad(se.pairwise_rank_loss, scores, grades, (4, 4))
        assert (grad[grades < 0] == 0).all()
        assert (grad[grades >= 0] != 0).any()

    @pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.int8, torch.uint8])
    def test_integer_grade_dtypes(self, dtype):
        scores, grades = make_batch(12, (4, 4), seed=4, missing=0.0)
        a = se.pairwise_rank_loss(scores, grades, 4)
        b = se.pairwise_rank_loss(scores, grades.to(dtype), 4)
        assert torch.equal(a, b)

    def test_non_contiguous_inputs(self):
        scores, grades = make_batch(15, (4, 3, 5), seed=5)
        a = se.pairwise_rank_loss(scores, grades, (4, 3, 5), task_reduction="none")
        b = se.pairwise_rank_loss(scores.t().contiguous().t(), grades.t().contiguous().t(), (4, 3, 5),
                                  task_reduction="none")
        assert torch.equal(a, b)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half_precision_inputs(self, dtype):
        scores, grades = make_batch(40, TASK_KS, seed=6)
        loss, grad, _ = loss_and_grad(se.pairwise_rank_loss, scores.to(dtype), grades, TASK_KS)
        loss_r, grad_r, _ = loss_and_grad(ref.pairwise_rank_loss, scores.to(dtype).double(), grades, TASK_KS)
        # Inputs are exactly representable; only the output rounding differs.
        torch.testing.assert_close(loss.double(), loss_r, rtol=1e-2, atol=1e-3)
        torch.testing.assert_close(grad.double(), grad_r, rtol=1e-2, atol=1e-3)

    def test_module_matches_functional(self):
        scores, grades = make_batch(30, TASK_KS, seed=7)
        loss_fn = se.PairwiseRankLoss(list(TASK_KS), lambda_sim=0.5, task_reduction="sum")
        assert "lambda=(1.0, 0.5)" in repr(loss_fn)
        a = loss_fn(scores, grades)
        b = se.pairwise_rank_loss(scores, grades, TASK_KS, lambda_sim=0.5, task_reduction="sum")
        assert torch.equal(a, b)
        _, counts = se.pairwise_rank_loss(scores, grades, TASK_KS, return_counts=True)
        assert torch.equal(loss_fn.last_counts, counts)
        # num_grades may be a tensor or one int for every task.
        assert torch.equal(se.PairwiseRankLoss(torch.tensor(TASK_KS), task_reduction="sum", lambda_sim=0.5)(scores, grades), a)
        assert torch.equal(se.PairwiseRankLoss(4)(scores, grades.clamp(max=3)),
                           se.pairwise_rank_loss(scores, grades.clamp(max=3), 4))

    def test_counts_match_pair_enumeration(self):
        scores, grades = make_batch(25, (3, 5), seed=8)
        _, counts = se.pairwise_rank_loss(scores, grades, (3, 5), return_counts=True)
        for t in range(2):
            y = grades[:, t][grades[:, t] >= 0].tolist()
            pairs = list(itertools.combinations(y, 2))
            assert counts[t].tolist() == [sum(a != b for a, b in pairs), sum(a == b for a, b in pairs)]
