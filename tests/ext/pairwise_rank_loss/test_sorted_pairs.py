"""The sorted all-pairs path of pairwise_rank_loss: on the CPU, and as the CUDA
backend's device-generic code run on the CPU."""
import itertools
import math

import pytest
import torch

import spinerank_ext as se
from spinerank_ext import reference as ref

from conftest import TASK_KS, make_batch, op_args, op_setting, spread_scores

ops = torch.ops.spinerank_ext


# ---------------------------------------------------------------------------
# The sorted all-pairs path

SORTED, DIRECT = 0, 2**62  # thresholds that force one path for every task


def path(threshold):
    return op_setting(ops._sorted_pairs_min_n, threshold)


def summed_loss_and_grad(fn, scores, grades, ks, **kw):
    x = scores.detach().clone().requires_grad_()
    loss, counts = fn(x, grades, ks, return_counts=True, **kw)
    loss.sum().backward()
    return loss.detach(), x.grad, counts


def assert_relative(actual, expected, rtol):
    """|actual - expected| <= rtol * max|expected|: elementwise for a scalar, normwise for a gradient."""
    if expected.numel() == 0:
        return
    error = (actual - expected).abs().max().item()
    assert error <= rtol * expected.abs().max().item(), (error, expected.abs().max().item())


OPTIONS = [dict(task_reduction=r, severity_weight=w) for r, w in itertools.product(("mean", "sum", "none"), (True, False))]


class TestSortedPath:
    """The sorted all-pairs path (squared hinge, O(G^2 n log n)) against the reference and the direct path.

    The op picks the path per task from its number of valid samples;
    ``torch.ops.spinerank_ext._sorted_pairs_min_n`` moves that threshold so that
    both paths run on the same input.
    """

    def test_threshold_op_sets_and_returns_the_previous_value(self):
        default = ops._sorted_pairs_min_n(-1)
        assert default == 576  # kSortedPairsMinN, csrc/loss/tuning.h
        assert ops._sorted_pairs_min_n(7) == default
        assert ops._sorted_pairs_min_n(-1) == 7
        assert ops._sorted_pairs_min_n(default) == 7

    @pytest.mark.parametrize("B", [0, 1, 2, 3, 17, 64])
    @pytest.mark.parametrize("kw", OPTIONS, ids=lambda kw: f"{kw['task_reduction']}-sw{int(kw['severity_weight'])}")
    def test_sorted_path_matches_reference(self, B, kw):
        scores, grades = make_batch(B, TASK_KS, seed=B, missing=0.3)
        expected = summed_loss_and_grad(ref.pairwise_rank_loss, scores, grades, TASK_KS, **kw)
        with path(SORTED):
            loss, grad, counts = summed_loss_and_grad(se.pairwise_rank_loss, scores, grades, TASK_KS, **kw)
        torch.testing.assert_close(loss, expected[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, expected[1], rtol=1e-12, atol=1e-12)
        assert torch.equal(counts, expected[2])

    def test_sorted_path_matches_reference_with_other_parameters_and_float32(self):
        scores, grades = make_batch(80, (2, 3, 5, 4), seed=5, missing=0.1)
        kw = dict(lambda_dis=0.3, lambda_sim=2.0, scale=4.0, margin_base=0.1, margin_scale=3.0)
        expected = summed_loss_and_grad(ref.pairwise_rank_loss, scores, grades, (2, 3, 5, 4), **kw)
        with path(SORTED):
            loss, grad, _ = summed_loss_and_grad(se.pairwise_rank_loss, scores.float(), grades, (2, 3, 5, 4), **kw)
        assert grad.dtype == torch.float32
        torch.testing.assert_close(loss, expected[0].float(), rtol=2e-6, atol=1e-6)
        torch.testing.assert_close(grad, expected[1].float(), rtol=2e-6, atol=1e-6)

    @pytest.mark.parametrize("B", [300, 1500])
    @pytest.mark.parametrize("ties", [True, False])
    @pytest.mark.parametrize("kw", OPTIONS, ids=lambda kw: f"{kw['task_reduction']}-sw{int(kw['severity_weight'])}")
    def test_both_paths_agree_within_1e_10(self, B, ties, kw):
        scores, grades = make_batch(B, TASK_KS, seed=B + ties, missing=0.2, ties=ties)
        # A constant offset and a wide spread: the sums must not lose digits to cancellation.
        scores = scores * 3.0 + 1e3
        with path(DIRECT):
            direct = summed_loss_and_grad(se.pairwise_rank_loss, scores, grades, TASK_KS, **kw)
        with path(SORTED):
            fast = summed_loss_and_grad(se.pairwise_rank_loss, scores, grades, TASK_KS, **kw)
        for a, b in zip(fast[0].reshape(-1), direct[0].reshape(-1)):
            assert_relative(a, b, 1e-10)
        assert_relative(fast[1], direct[1], 1e-10)
        assert torch.equal(fast[2], direct[2])

    def test_missing_grades_and_empty_tasks_on_both_paths(self):
        scores, grades = make_batch(400, (4, 3, 5), seed=8, missing=0.5)
        grades[:, 1] = -1  # a task without samples
        grades[1:, 2] = -1  # a task with one sample
        with path(DIRECT):
            direct = summed_loss_and_grad(se.pairwise_rank_loss, scores, grades, (4, 3, 5), task_reduction="none")
        with path(SORTED):
            fast = summed_loss_and_grad(se.pairwise_rank_loss, scores, grades, (4, 3, 5), task_reduction="none")
        assert fast[0][1:].tolist() == [0.0, 0.0] and fast[2][1:].tolist() == [[0, 0], [0, 0]]
        assert_relative(fast[0], direct[0], 1e-10)
        assert_relative(fast[1], direct[1], 1e-10)

    def test_logistic_always_takes_the_direct_path(self):
        scores, grades = make_batch(300, TASK_KS, seed=6)
        with path(DIRECT):
            direct = summed_loss_and_grad(se.pairwise_rank_loss, scores, grades, TASK_KS, pair_fn="logistic")
        with path(SORTED):
            other = summed_loss_and_grad(se.pairwise_rank_loss, scores, grades, TASK_KS, pair_fn="logistic")
        for a, b in zip(direct, other):
            assert torch.equal(a, b)

    def test_the_default_threshold_splits_tasks_by_their_valid_samples(self):
        # Task 0 has 640 valid samples (sorted path, kSortedPairsMinN = 576), task 1
        # only 100 (direct path).
        scores, grades = make_batch(640, (4, 4), seed=7, missing=0.0)
        grades[100:, 1] = -1
        default = summed_loss_and_grad(se.pairwise_rank_loss, scores, grades, (4, 4), task_reduction="none")
        with path(SORTED):
            fast = summed_loss_and_grad(se.pairwise_rank_loss, scores, grades, (4, 4), task_reduction="none")
        with path(DIRECT):
            direct = summed_loss_and_grad(se.pairwise_rank_loss, scores, grades, (4, 4), task_reduction="none")
        assert default[0][0] == fast[0][0] and torch.equal(default[1][:, 0], fast[1][:, 0])
        assert default[0][1] == direct[0][1] and torch.equal(default[1][:, 1], direct[1][:, 1])
        assert not torch.equal(fast[1][:, 0], direct[1][:, 0])  # the paths round differently

    @pytest.mark.parametrize("reduction", ["mean", "none"])
    def test_gradcheck_sorted_path(self, reduction):
        ks = (4, 3, 5)
        _, grades = make_batch(12, ks, seed=1)
        scores = spread_scores(12, 3, 1).div(3).requires_grad_()
        fn = lambda s: se.pairwise_rank_loss(s, grades, ks, task_reduction=reduction)  # noqa: E731
        with path(SORTED):
            assert torch.autograd.gradcheck(fn, (scores,), eps=1e-6, atol=1e-7)

    def test_opcheck_sorted_path(self):
        scores, grades = make_batch(20, TASK_KS, seed=2)
        with path(SORTED):
            torch.library.opcheck(ops.pairwise_rank_loss.default, op_args(scores.requires_grad_(), grades, TASK_KS))

    def test_sorted_path_does_not_depend_on_thread_count(self):
        scores, grades = make_batch(700, TASK_KS, seed=9, dtype=torch.float32)
        before = torch.get_num_threads()
        results = []
        try:
            with path(SORTED):
                for threads in (1, 2):
                    torch.set_num_threads(threads)
                    results.append(summed_loss_and_grad(se.pairwise_rank_loss, scores, grades, TASK_KS, task_reduction="none"))
        finally:
            torch.set_num_threads(before)
        for a, b in zip(*results):
            assert torch.equal(a, b)


# ---------------------------------------------------------------------------
# The CUDA backend's sorted all-pairs path, without a GPU

DEFAULTS = dict(scale=10.0, margin_base=0.5, margin_scale=1.5, lambda_dis=1.0, lambda_sim=0.25,
                severity_weight=True, task_reduction="mean")


def generic(scores, grades, ks, **kw):
    a = {**DEFAULTS, **kw}
    return ops._sorted_hinge_generic(scores, grades, list(ks), a["scale"], a["margin_base"], a["margin_scale"],
                                     a["lambda_dis"], a["lambda_sim"], a["severity_weight"], a["task_reduction"])


def cpu_op(scores, grades, ks, **kw):
    a = {**DEFAULTS, **kw}
    return ops.pairwise_rank_loss(scores, grades, list(ks), a["scale"], a["margin_base"], a["margin_scale"],
                                  a["lambda_dis"], a["lambda_sim"], a["severity_weight"], "squared_hinge", 1.0,
                                  -1, 0.7, a["task_reduction"], None)


def relative_error(actual, expected):
    if expected.numel() == 0:
        return 0.0
    return (actual - expected).abs().max().item() / max(expected.abs().max().item(), 1e-300)


class TestGenericSortedPath:
    """The CUDA backend's sorted all-pairs path without a GPU.

    For large batches the CUDA op computes the squared-hinge loss from
    device-generic ATen ops (sort, cumsum, gather, scatter) and one per-row pass
    (csrc/loss/sorted_pairs_generic.h, sorted_hinge_row in csrc/loss/sorted_pairs.h). The
    private op ``_sorted_hinge_generic`` runs exactly that code on the CPU, with
    the per-row pass as a loop instead of a kernel: here it is checked against the
    reference and the CPU kernels. TestCuda (test_cuda.py) runs the CUDA op itself on
    a GPU.
    """

    @pytest.mark.parametrize("B", [0, 1, 2, 3, 17, 64])
    @pytest.mark.parametrize("kw", OPTIONS, ids=lambda kw: f"{kw['task_reduction']}-sw{int(kw['severity_weight'])}")
    def test_matches_the_reference(self, B, kw):
        scores, grades = make_batch(B, TASK_KS, seed=B, missing=0.3)
        x = scores.clone().requires_grad_()
        expected, expected_counts = ref.pairwise_rank_loss(x, grades, TASK_KS, return_counts=True, **kw)
        expected.sum().backward()
        loss, grad, counts = generic(scores, grades, TASK_KS, **kw)
        torch.testing.assert_close(loss, expected.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, x.grad, rtol=1e-12, atol=1e-12)
        assert torch.equal(counts, expected_counts)

    @pytest.mark.parametrize("B", [300, 1500])
    @pytest.mark.parametrize("ties", [True, False])
    @pytest.mark.parametrize("kw", OPTIONS, ids=lambda kw: f"{kw['task_reduction']}-sw{int(kw['severity_weight'])}")
    def test_agrees_with_the_cpu_kernels_within_1e_10(self, B, ties, kw):
        scores, grades = make_batch(B, TASK_KS, seed=B + ties, missing=0.2, ties=ties)
        scores = scores * 3.0 + 1e3  # an offset: the prefix sums must not lose digits to cancellation
        loss, grad, counts = generic(scores, grades, TASK_KS, **kw)
        expected = cpu_op(scores, grades, TASK_KS, **kw)
        assert relative_error(loss, expected[0]) <= 1e-10
        assert relative_error(grad, expected[1]) <= 1e-10
        assert torch.equal(counts, expected[2])

    def test_other_parameters_float32_and_empty_tasks(self):
        ks = (2, 3, 5, 4)
        scores, grades = make_batch(200, ks, seed=5, missing=0.1)
        grades[:, 1] = -1  # no sample
        grades[1:, 3] = -1  # one sample
        kw = dict(lambda_dis=0.3, lambda_sim=2.0, scale=4.0, margin_base=0.1, margin_scale=3.0, task_reduction="none")
        loss, grad, counts = generic(scores.float(), grades, ks, **kw)
        expected = cpu_op(scores.float(), grades, ks, **kw)
        assert loss.dtype == grad.dtype == torch.float32
        torch.testing.assert_close(loss, expected[0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(grad, expected[1], rtol=1e-6, atol=1e-6)
        assert torch.equal(counts, expected[2])
        assert loss[1].item() == loss[3].item() == 0.0 and (grad[:, 1] == 0).all() and (grad[:, 3] == 0).all()

    @pytest.mark.parametrize("bad", ["grade", "nan", "inf"])
    def test_a_bad_value_makes_its_task_nan_as_on_cuda(self, bad):
        # The CUDA kernels cannot raise without a host synchronisation: the task's
        # loss and gradient become NaN, the other tasks are untouched.
        scores, grades = make_batch(50, (4, 3, 5), seed=9, missing=0.1)
        grades[3, 1] = 2
        clean_grades = grades.clone()
        if bad == "grade":
            grades[3, 1] = 3  # K_1 = 3
        else:
            scores[3, 1] = math.nan if bad == "nan" else math.inf
        loss, grad, _ = generic(scores, grades, (4, 3, 5), task_reduction="none")
        clean = cpu_op(scores.nan_to_num(0.0, 0.0, 0.0), clean_grades, (4, 3, 5), task_reduction="none")
        assert math.isnan(loss[1].item()) and grad[:, 1].isnan().all()
        torch.testing.assert_close(loss[[0, 2]], clean[0][[0, 2]], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad[:, [0, 2]], clean[1][:, [0, 2]], rtol=1e-12, atol=1e-12)
        assert math.isnan(generic(scores, grades, (4, 3, 5))[0].item())  # and the mean over tasks

    def test_missing_rows_may_hold_any_score(self):
        scores, grades = make_batch(40, (4, 4), seed=2, missing=0.3)
        noisy = scores.clone()
        noisy[grades[:, 0] < 0, 0] = math.nan
        noisy[grades[:, 1] < 0, 1] = -math.inf
        for a, b in zip(generic(noisy, grades, (4, 4)), generic(scores, grades, (4, 4))):
            assert torch.equal(a, b)

    @pytest.mark.parametrize("reduction", ["mean", "none"])
    def test_opcheck(self, reduction):
        scores, grades = make_batch(40, TASK_KS, seed=4)
        a = {**DEFAULTS, "task_reduction": reduction}
        torch.library.opcheck(ops._sorted_hinge_generic.default,
                              (scores, grades, list(TASK_KS), a["scale"], a["margin_base"], a["margin_scale"],
                               a["lambda_dis"], a["lambda_sim"], a["severity_weight"], reduction),
                              test_utils=("test_schema", "test_faketensor"))

    @pytest.mark.parametrize("B", [5, 64, 300])
    def test_groups_are_the_grades_present_not_k(self, B):
        # Grades spread over a large K (only 4 values occur): groups are sized by
        # the grades present (at most min(K, B)), gaps use the grade values.
        K = 10**6
        g = torch.Generator().manual_seed(B)
        scores = torch.rand(B, 2, generator=g, dtype=torch.float64) * 10
        grades = torch.tensor([0, 17, K // 2, K - 1])[torch.randint(0, 4, (B, 2), generator=g)]
        grades[0, 1] = -1
        x = scores.clone().requires_grad_()
        expected, expected_counts = ref.pairwise_rank_loss(x, grades, (K, K), return_counts=True, task_reduction="none")
        expected.sum().backward()
        loss, grad, counts = generic(scores, grades, (K, K), task_reduction="none")
        torch.testing.assert_close(loss, expected.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, x.grad, rtol=1e-12, atol=1e-12)
        assert torch.equal(counts, expected_counts)

    def test_more_distinct_bad_grades_than_k_make_only_their_task_nan(self):
        # K = 2 but 40 distinct (bad) grades: more groups than the min(K, B) the
        # path sizes for; they are merged (no out-of-bounds write) and the task is NaN.
        scores, grades = make_batch(40, (2, 3), seed=6, missing=0.0)
        clean = cpu_op(scores, grades, (2, 3), task_reduction="none")
        grades[:, 0] = torch.arange(40)
        loss, grad, _ = generic(scores, grades, (2, 3), task_reduction="none")
        assert math.isnan(loss[0].item()) and grad[:, 0].isnan().all()
        torch.testing.assert_close(loss[1], clean[0][1], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad[:, 1], clean[1][:, 1], rtol=1e-12, atol=1e-12)
