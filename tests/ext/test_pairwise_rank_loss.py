"""pairwise_rank_loss: values, gradients and pair counts against the reference
and hand-computed cases; bad input and limits; autograd, registration and
torch.compile; the cached argument checks; the sorted all-pairs path on the
CPU and as the CUDA backend's device-generic code; the pair_normalization
option; CUDA against CPU.

Mining (max_pairs) and mined_pairs: test_mined_pairs.py.
"""
import itertools
import math
import warnings

import pytest
import torch

import spinerank_ext as se
from spinerank_ext import _validate, reference
from spinerank_ext import reference as ref

from conftest import CUDA, CUDA_TESTS, TASK_KS, cuda_only, fused_loss_and_grad, make_batch, op_setting, published

ops = torch.ops.spinerank_ext


# ---------------------------------------------------------------------------
# Values

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


# ---------------------------------------------------------------------------
# Bad input

def good(B=6, T=3, K=4):
    return torch.rand(B, T), torch.randint(0, K, (B, T))


CASES = [
    # (description, scores, grades, num_grades, kwargs, exception, message pattern)
    ("1-D scores", torch.rand(6), torch.zeros(6, dtype=torch.long), 4, {}, ValueError, r"scores must have shape \(B, T\), got shape \(6,\)"),
    ("3-D scores", torch.rand(2, 3, 4), torch.zeros(2, 3, 4, dtype=torch.long), 4, {}, ValueError, r"shape \(B, T\), got shape \(2, 3, 4\)"),
    ("B mismatch", torch.rand(6, 3), torch.zeros(5, 3, dtype=torch.long), 4, {}, ValueError, r"grades must have the shape of scores \(6, 3\), got \(5, 3\)"),
    ("T mismatch", torch.rand(6, 3), torch.zeros(6, 2, dtype=torch.long), 4, {}, ValueError, r"shape of scores \(6, 3\), got \(6, 2\)"),
    ("float grades", torch.rand(6, 3), torch.zeros(6, 3), 4, {}, ValueError, r"grades must be an integer tensor .* got torch.float32"),
    ("bool grades", torch.rand(6, 3), torch.zeros(6, 3, dtype=torch.bool), 4, {}, ValueError, r"integer tensor .* got torch.bool"),
    ("integer scores", torch.zeros(6, 3, dtype=torch.long), torch.zeros(6, 3, dtype=torch.long), 4, {}, ValueError, r"scores must be a floating tensor"),
    ("num_grades length", *good(), (4, 4), {}, ValueError, r"num_grades has 2 entries but scores has T = 3 tasks"),
    ("K < 2", *good(), (4, 1, 4), {}, ValueError, r"num_grades\[1\] = 1: every task needs K >= 2"),
    ("num_grades type", *good(), "4", {}, ValueError, r"num_grades must be an int or a sequence of ints"),
    ("pair_fn", *good(), 4, dict(pair_fn="hinge"), ValueError, r"pair_fn must be one of .* got 'hinge'"),
    ("task_reduction", *good(), 4, dict(task_reduction="max"), ValueError, r"task_reduction must be one of .* got 'max'"),
    ("sigma", *good(), 4, dict(pair_fn="logistic", sigma=0.0), ValueError, r"sigma must be > 0, got 0.0"),
    ("max_pairs 0", *good(), 4, dict(max_pairs=0), ValueError, r"max_pairs must be None \(all pairs\) or an int >= 1, got 0"),
    ("max_pairs float", *good(), 4, dict(max_pairs=10.0), ValueError, r"max_pairs must be None .* got 10.0"),
    ("hard_fraction", *good(), 4, dict(max_pairs=5, hard_fraction=1.5), ValueError, r"hard_fraction must be in \[0, 1\], got 1.5"),
    ("devices", torch.rand(6, 3, device="meta"), torch.zeros(6, 3, dtype=torch.long), 4, {}, ValueError, r"same device, got meta and cpu"),
    ("not a tensor", [[0.1, 0.2]], torch.zeros(1, 2, dtype=torch.long), 4, {}, TypeError, r"scores and grades must be tensors, got list"),
]


class TestBadInputs:
    """Every bad input raises an error whose message names the problem."""

    @pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
    def test_bad_arguments(self, case):
        _, scores, grades, ks, kw, exc, pattern = case
        with pytest.raises(exc, match=pattern):
            se.pairwise_rank_loss(scores, grades, ks, **kw)
        with pytest.raises(exc, match=pattern):
            ref.pairwise_rank_loss(scores, grades, ks, **kw)

    def test_bad_module_parameters_fail_at_construction(self):
        with pytest.raises(ValueError, match="pair_fn must be one of"):
            se.PairwiseRankLoss(4, pair_fn="svm")
        with pytest.raises(ValueError, match="hard_fraction must be in"):
            se.PairwiseRankLoss(4, max_pairs=10, hard_fraction=-0.1)
        with pytest.raises(ValueError, match="num_grades has 3 entries but scores has T = 2"):
            se.PairwiseRankLoss((4, 4, 4))(*good(T=2))

    @pytest.mark.parametrize("impl", [se.pairwise_rank_loss, ref.pairwise_rank_loss], ids=["fused", "reference"])
    def test_grade_out_of_range_names_task_and_value(self, impl):
        scores, grades = good(B=6, T=11, K=3)
        grades[4, 3] = 3  # task 3 has K = 3
        with pytest.raises(ValueError, match=r"grade 3 at row 4, task 3 is out of range: task 3 has K = 3"):
            impl(scores, grades, TASK_KS)

    @pytest.mark.parametrize("impl", [se.pairwise_rank_loss, ref.pairwise_rank_loss], ids=["fused", "reference"])
    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
    def test_non_finite_scores_name_row_and_task(self, impl, bad):
        scores, grades = good()
        scores[2, 1] = bad
        with pytest.raises(ValueError, match=rf"scores must be finite: got {bad} at row 2, task 1"):
            impl(scores, grades, 4)

    def test_non_finite_score_of_a_missing_grade_is_ignored(self):
        scores, grades = good()
        scores[2, 1], grades[2, 1] = float("nan"), -1
        assert torch.isfinite(se.pairwise_rank_loss(scores, grades, 4))

    def test_direct_op_calls_are_checked_too(self):
        ops = torch.ops.spinerank_ext
        scores, grades = good()
        args = [scores, grades, [4, 4, 4], 10.0, 0.5, 1.5, 1.0, 0.25, True, "squared_hinge", 1.0, -1, 0.7, "mean", None]
        bad = list(args)
        bad[1] = grades[:5]
        with pytest.raises(ValueError, match="grades must have the shape of scores"):
            ops.pairwise_rank_loss(*bad)
        bad = list(args)
        bad[2] = [4, 4]
        with pytest.raises(ValueError, match="num_grades has 2 entries but scores has T = 3 tasks"):
            ops.pairwise_rank_loss(*bad)
        bad = list(args)
        bad[9] = "hinge"
        with pytest.raises(ValueError, match="pair_fn must be 'squared_hinge' or 'logistic', got 'hinge'"):
            ops.pairwise_rank_loss(*bad)
        bad = list(args)
        bad[11] = 10  # mining without a seed
        with pytest.raises(ValueError, match="mining .* needs seed"):
            ops.pairwise_rank_loss(*bad)
        with pytest.raises(ValueError, match="mined_pairs needs max_pairs >= 1"):
            ops.mined_pairs(scores, grades, [4, 4, 4], 0.5, 1.5, 0, 0.7, torch.tensor(0))


# ---------------------------------------------------------------------------
# Cached checks

def small_batch():
    scores = torch.tensor([[0.0, 1.0], [1.0, 2.0], [2.0, 0.5]], dtype=torch.float64)
    grades = torch.tensor([[0, 1], [1, 0], [2, 1]])
    return scores, grades


class TestCachedChecks:
    """The functional loss checks its arguments once per distinct set and keeps the
    result: a cached check must never let through what the full check rejects."""

    def test_a_cached_k_tuple_does_not_admit_equal_non_int_tuples(self):
        scores, grades = small_batch()
        se.pairwise_rank_loss(scores, grades, (4, 4))  # (4, 4) is now cached
        for bad in ((4.0, 4), (4, 4.0)):
            with pytest.raises(ValueError, match="num_grades must be an int or a sequence of ints"):
                se.pairwise_rank_loss(scores, grades, bad)
        with pytest.raises(ValueError, match=r"num_grades\[1\] = True: every task needs K >= 2"):
            se.pairwise_rank_loss(scores, grades, (4, True))

    def test_cached_and_full_checks_agree(self):
        for ks, T in [((4, 4), 2), (3, 5), ((5, 4, 4), 3)]:
            assert _validate.num_grades_tuple(ks, T) == _validate._num_grades_tuple(ks, T)
            assert _validate.num_grades_tuple(list(ks) if isinstance(ks, tuple) else ks, T) == \
                _validate._num_grades_tuple(ks, T)
        with pytest.raises(ValueError, match="num_grades has 2 entries but scores has T = 3"):
            _validate.num_grades_tuple((4, 4), 3)

    def test_a_rejected_option_is_rejected_on_every_call(self):
        scores, grades = small_batch()
        for _ in range(3):
            with pytest.raises(ValueError, match=r"hard_fraction must be in \[0, 1\], got 2.0"):
                se.pairwise_rank_loss(scores, grades, 3, max_pairs=2, hard_fraction=2.0, generator=0)
            with pytest.raises(ValueError, match=r"task_reduction must be one of"):
                se.pairwise_rank_loss(scores, grades, 3, task_reduction="max")

    def test_options_that_differ_only_in_type_are_checked_apart(self):
        scores, grades = small_batch()
        se.pairwise_rank_loss(scores, grades, 3, max_pairs=2, generator=0)
        with pytest.raises(ValueError, match="max_pairs must be None"):
            se.pairwise_rank_loss(scores, grades, 3, max_pairs=2.0, generator=0)
        with pytest.raises(ValueError, match="max_pairs must be None"):
            se.pairwise_rank_loss(scores, grades, 3, max_pairs=True, generator=0)

    def test_repeated_calls_give_the_first_calls_result(self):
        scores, grades = small_batch()
        first = se.pairwise_rank_loss(scores, grades, 3, margin_base=0.7, lambda_sim=0.5)
        for _ in range(3):
            assert torch.equal(se.pairwise_rank_loss(scores, grades, 3, margin_base=0.7, lambda_sim=0.5), first)
        assert not torch.equal(se.pairwise_rank_loss(scores, grades, 3, margin_base=0.9, lambda_sim=0.5), first)


# ---------------------------------------------------------------------------
# Limits

MAX_K = 2**31 - 1  # grades are stored as int32 by the kernels
OP_ARGS = (10.0, 0.5, 1.5, 1.0, 0.25, True, "squared_hinge", 1.0, -1, 0.7, "mean", None)


def k_message(task, k):
    return rf"num_grades\[{task}\] = {k} exceeds the maximum K = {MAX_K} \(grades are stored as int32\)"


def plain_loss(scores, grades, K, scale=10.0, margin_base=0.5, margin_scale=1.5, lambda_sim=0.25):
    """SPEC §3 for one task, all pairs, squared hinge, in plain Python floats."""
    dis, sim, n_dis, n_sim = 0.0, 0.0, 0, 0
    s, y = scores.tolist(), grades.tolist()
    for i in range(len(s)):
        for j in range(i + 1, len(s)):
            if y[i] < 0 or y[j] < 0:
                continue
            d, delta = y[i] - y[j], s[i] - s[j]
            if d == 0:
                sim, n_sim = sim + delta**2, n_sim + 1
            else:
                g = abs(d) / (K - 1)
                r = 1.0 if d > 0 else -1.0
                dis, n_dis = dis + scale * g * max(0.0, margin_base + margin_scale * g - r * delta) ** 2, n_dis + 1
    return dis / max(1, n_dis) + lambda_sim * sim / max(1, n_sim)


# Every CPU path that used to loop or allocate by K (all pairs, the sorted
# path, mining's table and buffered selection) and the device-generic sorted
# path of the CUDA backend.
LARGE_K_PATHS = {
    "all_pairs": ({}, None),
    "sorted": ({}, ("_sorted_pairs_min_n", 0)),
    "mining_table": (dict(max_pairs=500, hard_fraction=1.0), None),
    "mining_buffered": (dict(max_pairs=500, hard_fraction=1.0), ("_mining_table_max_pairs", 0)),
}


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


UNSIGNED = [torch.uint8, torch.uint16, torch.uint32, torch.uint64]


def unsigned_max(dtype):
    return {torch.uint8: 2**8 - 1, torch.uint16: 2**16 - 1, torch.uint32: 2**32 - 1, torch.uint64: 2**64 - 1}[dtype]


def unsigned_grades(values, dtype):
    # torch.tensor cannot take uint64 values >= 2^63 directly: go through int64 bits.
    if dtype != torch.uint64:
        return torch.tensor(values, dtype=dtype)
    return torch.tensor([[v - 2**64 if v >= 2**63 else v for v in row] for row in values]).view(torch.uint64)


class TestLimits:
    """Limits: K, max_pairs, generator, unsigned grades (issue 13)."""

    @pytest.mark.parametrize("k", [2**31, 2**32, 2**32 + 5, 2**63 - 1, 2**63, 2**64, 10**30])
    def test_num_grades_above_the_maximum_is_named(self, k):
        scores, grades = good()
        ks = (4, k, 4)
        for task, call in ((1, lambda: se.pairwise_rank_loss(scores, grades, ks)),
                           (0, lambda: se.pairwise_rank_loss(scores, grades, k)),
                           (1, lambda: se.PairwiseRankLoss(ks)),  # at construction
                           (0, lambda: se.PairwiseRankLoss(k)),
                           (1, lambda: se.mined_pairs(scores, grades, ks, max_pairs=5)),
                           (1, lambda: ref.pairwise_rank_loss(scores, grades, ks)),
                           (1, lambda: ref.mined_pairs(scores, grades, ks, max_pairs=5))):
            with pytest.raises(ValueError, match=k_message(task, k)):
                call()

    @pytest.mark.parametrize("k", [2**31, 2**32, 2**32 + 5, 2**63 - 1])
    def test_num_grades_above_the_maximum_in_a_direct_op_call(self, k):
        # The C++ check, on the int64 as it arrives: nothing narrows K before it.
        ops = torch.ops.spinerank_ext
        scores, grades = good()
        ks = [4, k, 4]
        with pytest.raises(ValueError, match=k_message(1, k)):
            ops.pairwise_rank_loss(scores, grades, ks, *OP_ARGS)
        with pytest.raises(ValueError, match=k_message(1, k)):
            ops.mined_pairs(scores, grades, ks, 0.5, 1.5, 5, 0.7, torch.tensor(0))
        with pytest.raises(ValueError, match=k_message(1, k)):
            ops._sorted_hinge_generic(scores, grades, ks, 10.0, 0.5, 1.5, 1.0, 0.25, True, "mean")

    @pytest.mark.parametrize("k", [2**63, 2**64])
    def test_num_grades_beyond_int64_in_a_direct_op_call_is_a_schema_error(self, k):
        # Not representable in the schema's int[]: the dispatcher refuses it (no
        # value reaches a kernel). The public API names it, see above.
        with pytest.raises((RuntimeError, TypeError)):
            torch.ops.spinerank_ext.pairwise_rank_loss(*good(), [4, k, 4], *OP_ARGS)

    @pytest.mark.parametrize("k", [-1, -(2**63), 0, 1])
    def test_num_grades_below_two(self, k):
        with pytest.raises(ValueError, match=rf"num_grades\[0\] = {k}: every task needs K >= 2 grades"):
            se.pairwise_rank_loss(*good(), k)
        with pytest.raises(ValueError, match=rf"num_grades\[0\] = {k}: every task needs K >= 2 grades"):
            se.PairwiseRankLoss(k)
        if k >= -(2**63):
            with pytest.raises(ValueError, match=rf"num_grades\[1\] = {k}: every task needs K >= 2 grades"):
                torch.ops.spinerank_ext.pairwise_rank_loss(*good(), [4, k, 4], *OP_ARGS)

    def test_num_grades_tensor_above_the_maximum(self):
        with pytest.raises(ValueError, match=k_message(2, 2**31)):
            se.pairwise_rank_loss(*good(), torch.tensor([4, 4, 2**31]))

    def test_num_grades_above_the_maximum_in_the_fake_kernel(self):
        from torch._subclasses.fake_tensor import FakeTensorMode

        with FakeTensorMode():
            scores, grades = torch.empty(6, 3), torch.empty(6, 3, dtype=torch.long)
            with pytest.raises(ValueError, match=k_message(1, 2**32 + 5)):
                torch.ops.spinerank_ext.pairwise_rank_loss(scores, grades, [4, 2**32 + 5, 4], *OP_ARGS)

    @pytest.mark.parametrize("k", [4, 10**6, MAX_K])
    @pytest.mark.parametrize("grade_values", ["small", "sparse"])
    def test_large_k_gives_the_plain_formula(self, k, grade_values):
        # Grades 0..3, or four values spread over 0..K-1 (the kernels' grouping
        # then sorts instead of counting): the same loss as the formula.
        g = torch.Generator().manual_seed(k % 1000)
        scores = torch.rand(40, 1, generator=g, dtype=torch.float64) * 10
        grades = torch.randint(0, 4, (40, 1), generator=g)
        if grade_values == "sparse":
            grades = torch.tensor([0, 3, k // 2, k - 1])[grades]
        grades[5] = -1
        expected = plain_loss(scores[:, 0], grades[:, 0], k)
        assert se.pairwise_rank_loss(scores, grades, k).item() == pytest.approx(expected, rel=1e-12)
        assert ref.pairwise_rank_loss(scores, grades, k).item() == pytest.approx(expected, rel=1e-12)

    @pytest.mark.parametrize("path", list(LARGE_K_PATHS))
    @pytest.mark.parametrize("grade_values", ["small", "sparse"])
    def test_cost_does_not_grow_with_k(self, path, grade_values):
        import time

        from conftest import op_setting

        kw, setting = LARGE_K_PATHS[path]
        B, K = 300, 10**6
        g = torch.Generator().manual_seed(3)
        scores = torch.rand(B, 2, generator=g, dtype=torch.float64) * 10
        small = torch.randint(0, 4, (B, 2), generator=g)
        grades = small if grade_values == "small" else torch.tensor([0, 1, K // 3, K - 1])[small]
        with op_setting(getattr(torch.ops.spinerank_ext, setting[0]), setting[1]) if setting else _nothing():
            start = time.perf_counter()
            loss = se.pairwise_rank_loss(scores, grades, K, task_reduction="none", **kw)
            elapsed = time.perf_counter() - start
        # Before: the grade loops and tables were sized by K (K = 1e5: 15 s; 1e6: ~25 min).
        assert elapsed < 2.0, f"{path}: {elapsed:.2f} s for K = {K}"
        expected = ref.pairwise_rank_loss(scores, grades, K, task_reduction="none", **kw)
        torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)

    def test_cost_does_not_grow_with_k_on_the_generic_sorted_path(self):
        import time

        B, K = 2000, 10**6
        g = torch.Generator().manual_seed(4)
        scores = torch.rand(B, 2, generator=g, dtype=torch.float64) * 10
        grades = torch.tensor([0, 2, K // 2, K - 1])[torch.randint(0, 4, (B, 2), generator=g)]
        start = time.perf_counter()
        loss, pair_grad, counts = torch.ops.spinerank_ext._sorted_hinge_generic(
            scores, grades, [K, K], 10.0, 0.5, 1.5, 1.0, 0.25, True, "none")
        assert time.perf_counter() - start < 2.0
        x = scores.clone().requires_grad_()
        expected, expected_counts = se.pairwise_rank_loss(x, grades, K, task_reduction="none", return_counts=True)
        expected.sum().backward()
        torch.testing.assert_close(loss, expected.detach(), rtol=1e-10, atol=0)
        torch.testing.assert_close(pair_grad, x.grad, rtol=1e-9, atol=1e-15)
        assert torch.equal(counts, expected_counts)

    @pytest.mark.parametrize("max_pairs", [2**63, 2**64, 10**40])
    def test_max_pairs_above_int64(self, max_pairs):
        pattern = rf"max_pairs = {max_pairs} exceeds the maximum 9223372036854775807 \(2\^63 - 1\)"
        scores, grades = good()
        for call in (lambda: se.pairwise_rank_loss(scores, grades, 4, max_pairs=max_pairs),
                     lambda: se.PairwiseRankLoss(4, max_pairs=max_pairs),
                     lambda: se.mined_pairs(scores, grades, 4, max_pairs=max_pairs),
                     lambda: ref.pairwise_rank_loss(scores, grades, 4, max_pairs=max_pairs)):
            with pytest.raises(ValueError, match=pattern):
                call()

    def test_max_pairs_at_the_maximum_keeps_all_pairs(self):
        scores, grades = good(B=20)
        every = se.pairwise_rank_loss(scores, grades, 4)
        assert se.pairwise_rank_loss(scores, grades, 4, max_pairs=2**63 - 1, generator=1) == every
        assert se.PairwiseRankLoss(4, max_pairs=2**63 - 1, generator=1)(scores, grades) == every
        for hard_fraction in (0.0, 0.7, 1.0):
            loss = torch.ops.spinerank_ext.pairwise_rank_loss(
                scores, grades, [4, 4, 4], *OP_ARGS[:8], 2**63 - 1, hard_fraction, "mean", torch.tensor(1))[0]
            assert loss == every

    @pytest.mark.parametrize("generator", ["0", 1.5, [1], (2,), True, object()])
    def test_generator_of_the_wrong_type(self, generator):
        pattern = r"generator must be a torch.Generator, an int seed or None, got " + type(generator).__name__
        scores, grades = good()
        for call in (lambda: se.pairwise_rank_loss(scores, grades, 4, max_pairs=5, generator=generator),
                     lambda: se.pairwise_rank_loss(scores, grades, 4, generator=generator),  # even without mining
                     lambda: se.PairwiseRankLoss(4, max_pairs=5, generator=generator),
                     lambda: se.mined_pairs(scores, grades, 4, max_pairs=5, generator=generator),
                     lambda: ref.pairwise_rank_loss(scores, grades, 4, max_pairs=5, generator=generator),
                     lambda: ref.mined_pairs(scores, grades, 4, max_pairs=5, generator=generator)):
            with pytest.raises(TypeError, match=pattern):
                call()

    @pytest.mark.parametrize("seed", [2**63, -(2**63) - 1, 2**64])
    def test_generator_seed_outside_int64(self, seed):
        with pytest.raises(ValueError, match=rf"generator: an int seed must fit in int64 .* got {seed}"):
            se.pairwise_rank_loss(*good(), 4, max_pairs=5, generator=seed)
        with pytest.raises(ValueError, match=rf"generator: an int seed must fit in int64 .* got {seed}"):
            se.PairwiseRankLoss(4, max_pairs=5, generator=seed)

    @pytest.mark.parametrize("seed", [2**63 - 1, -(2**63), 0])
    def test_generator_seed_at_the_int64_limits(self, seed):
        scores, grades = good(B=12)
        a = se.pairwise_rank_loss(scores, grades, 4, max_pairs=5, generator=seed)
        b = se.pairwise_rank_loss(scores, grades, 4, max_pairs=5, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(a) and torch.isfinite(b)
        assert torch.equal(se.mined_pairs(scores, grades, 4, max_pairs=5, generator=seed),
                           se.mined_pairs(scores, grades, 4, max_pairs=5, generator=seed))

    @pytest.mark.parametrize("dtype", UNSIGNED)
    @pytest.mark.parametrize("impl", [se.pairwise_rank_loss, ref.pairwise_rank_loss], ids=["fused", "reference"])
    def test_unsigned_grades_in_range_equal_int64_grades(self, impl, dtype):
        scores, grades = good(B=10)
        expected = impl(scores, grades, 4)
        assert impl(scores, grades.to(dtype), 4) == expected
        assert torch.equal(se.mined_pairs(scores, grades.to(dtype), 4, max_pairs=7, generator=2),
                           se.mined_pairs(scores, grades, 4, max_pairs=7, generator=2))

    @pytest.mark.parametrize("dtype", UNSIGNED)
    @pytest.mark.parametrize("value", ["max", "K", "2^63"])
    @pytest.mark.parametrize("impl", [se.pairwise_rank_loss, ref.pairwise_rank_loss], ids=["fused", "reference"])
    def test_unsigned_grades_have_no_missing_value(self, impl, dtype, value):
        # Every unsigned value is a grade: the dtype's largest (2^64 - 1 of uint64
        # used to wrap to -1, "missing") is rejected like any grade >= K.
        if value == "2^63" and dtype != torch.uint64:
            pytest.skip("uint64 only")
        v = {"max": unsigned_max(dtype), "K": 4, "2^63": 2**63}[value]
        rows = [[1, 2, 0], [3, 0, 1], [2, v, 3], [0, 1, 2]]
        grades = unsigned_grades(rows, dtype)
        assert grades.dtype == dtype
        scores = torch.rand(4, 3)
        with pytest.raises(ValueError, match=rf"grade {v} at row 2, task 1 is out of range: task 1 has K = 4 grades"):
            impl(scores, grades, 4)
        with pytest.raises(ValueError, match=rf"grade {v} at row 2, task 1 is out of range"):
            se.mined_pairs(scores, grades, 4, max_pairs=3)


# ---------------------------------------------------------------------------
# Registration

def op_args(scores, grades, ks, *, max_pairs=-1, seed=None, pair_fn="squared_hinge", reduction="mean"):
    return (scores, grades, list(ks), 10.0, 0.5, 1.5, 1.0, 0.25, True, pair_fn, 1.0, max_pairs, 0.7,
            reduction, seed)


def spread_scores(B, T, seed):
    # Distinct, well-separated scores keep finite differences away from the
    # hinge's kink and from changes of the mined set.
    g = torch.Generator().manual_seed(seed)
    return (torch.randperm(B * T, generator=g).reshape(B, T).double() * 0.37 + torch.rand(B, T, generator=g, dtype=torch.float64) * 0.05)


SECOND_ORDER = r"second-order gradients are not supported by pairwise_rank_loss"


class TestRegistration:
    """Autograd, fake-tensor, opcheck, gradcheck, torch.compile and thread-count behaviour."""

    @pytest.mark.parametrize("pair_fn", ["squared_hinge", "logistic"])
    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    @pytest.mark.parametrize("mining", [None, 8])
    def test_gradcheck(self, pair_fn, reduction, mining):
        ks = (4, 3, 5)
        _, grades = make_batch(9, ks, seed=1)
        scores = spread_scores(9, 3, 1).div(3).requires_grad_()
        fn = lambda s: se.pairwise_rank_loss(s, grades, ks, pair_fn=pair_fn, task_reduction=reduction,  # noqa: E731
                                             max_pairs=mining, hard_fraction=0.5, generator=4)
        assert torch.autograd.gradcheck(fn, (scores,), eps=1e-6, atol=1e-7)

    @pytest.mark.parametrize("mining", [False, True])
    @pytest.mark.parametrize("reduction", ["mean", "none"])
    def test_opcheck_forward(self, mining, reduction):
        scores, grades = make_batch(20, TASK_KS, seed=2)
        seed = torch.tensor(42) if mining else None
        args = op_args(scores.requires_grad_(), grades, TASK_KS, max_pairs=30 if mining else -1, seed=seed,
                       reduction=reduction)
        torch.library.opcheck(ops.pairwise_rank_loss.default, args)

    def test_opcheck_backward_and_mined_pairs(self):
        pair_grad = torch.randn(7, 3, dtype=torch.float64)
        torch.library.opcheck(ops.pairwise_rank_loss_backward.default, (torch.tensor(0.5, dtype=torch.float64), pair_grad))
        torch.library.opcheck(ops.pairwise_rank_loss_backward.default, (torch.rand(3, dtype=torch.float64), pair_grad))
        scores, grades = make_batch(20, TASK_KS, seed=3)
        torch.library.opcheck(ops.mined_pairs.default, (scores, grades, list(TASK_KS), 0.5, 1.5, 25, 0.7, torch.tensor(1)))

    def test_fake_tensor_shapes(self):
        from torch._subclasses.fake_tensor import FakeTensorMode

        with FakeTensorMode():
            scores = torch.empty(13, 11)
            grades = torch.empty(13, 11, dtype=torch.long)
            loss, pair_grad, counts = ops.pairwise_rank_loss(*op_args(scores, grades, TASK_KS, reduction="none"))
            assert loss.shape == (11,) and pair_grad.shape == (13, 11) and counts.shape == (11, 2)
            assert counts.dtype == torch.long
            with pytest.raises(ValueError, match="num_grades has 3 entries"):
                ops.pairwise_rank_loss(*op_args(scores, grades, (4, 4, 4)))

    @pytest.mark.parametrize("dynamic", [False, True])
    def test_compile_fullgraph_forward_and_backward(self, dynamic):
        ks = TASK_KS
        loss_fn = se.PairwiseRankLoss(ks)

        def step(scores, grades):
            return loss_fn(scores * 1.5, grades)

        compiled = torch.compile(step, fullgraph=True, dynamic=dynamic)
        for B in (16, 24):
            scores, grades = make_batch(B, ks, seed=B, dtype=torch.float32)
            x, xc = scores.clone().requires_grad_(), scores.clone().requires_grad_()
            eager = step(x, grades)
            eager.backward()
            out = compiled(xc, grades)
            out.backward()
            torch.testing.assert_close(out, eager)
            torch.testing.assert_close(xc.grad, x.grad)

    def test_compile_fullgraph_with_mining(self):
        def step(scores, grades):
            return se.pairwise_rank_loss(scores, grades, TASK_KS, max_pairs=40, generator=7, task_reduction="none").sum()

        compiled = torch.compile(step, fullgraph=True)
        scores, grades = make_batch(30, TASK_KS, seed=8)
        x, xc = scores.clone().requires_grad_(), scores.clone().requires_grad_()
        step(x, grades).backward()
        compiled(xc, grades).backward()
        torch.testing.assert_close(xc.grad, x.grad)

    @pytest.mark.parametrize("generator", [5, None])
    def test_compile_fullgraph_module_with_mining(self, generator):
        eager = se.PairwiseRankLoss(TASK_KS, max_pairs=40, generator=generator)
        compiled_fn = se.PairwiseRankLoss(TASK_KS, max_pairs=40, generator=generator)
        compiled = torch.compile(compiled_fn, fullgraph=True)
        scores, grades = make_batch(30, TASK_KS, seed=12)
        for step in range(3):
            if generator is None:
                torch.manual_seed(step)
            a = eager(scores, grades)
            if generator is None:
                torch.manual_seed(step)
            b = compiled(scores, grades)
            if generator is not None:  # same seed stream, so the same pairs
                torch.testing.assert_close(a, b)
            assert torch.isfinite(b)
        if generator is not None:
            assert int(compiled_fn.mining_step) == 3

    def test_results_do_not_depend_on_thread_count(self):
        before = torch.get_num_threads()
        # Large enough to use the thread pool (> 2^15 pairs over all tasks).
        scores, grades = make_batch(300, TASK_KS, seed=9, dtype=torch.float32)
        results = []
        try:
            for threads in (1, 2):
                torch.set_num_threads(threads)
                for kw in ({}, dict(max_pairs=500, generator=3)):
                    x = scores.clone().requires_grad_()
                    loss, counts = se.pairwise_rank_loss(x, grades, TASK_KS, return_counts=True, task_reduction="none", **kw)
                    loss.sum().backward()
                    results.append((loss, x.grad, counts))
        finally:
            torch.set_num_threads(before)
        for one, two in zip(results[:2], results[2:]):
            for a, b in zip(one, two):
                assert torch.equal(a, b)

    @pytest.mark.parametrize("mining", [None, 6])
    def test_double_backward_raises_instead_of_returning_a_wrong_hessian(self, mining):
        # The saved per-sample gradient is a constant to autograd, so a second
        # derivative through it would silently be zero: it must raise instead.
        scores, grades = make_batch(8, (4, 3), seed=10)
        x = scores.clone().requires_grad_()
        loss = se.pairwise_rank_loss(x, grades, (4, 3), max_pairs=mining, generator=1)
        (g,) = torch.autograd.grad(loss, x, create_graph=True)
        assert g.requires_grad
        with pytest.raises(RuntimeError, match=SECOND_ORDER):
            torch.autograd.grad(g.sum(), x)
        # A gradient penalty: the penalty's gradient would silently lack this term.
        w = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
        scores_w = x * w
        (g,) = torch.autograd.grad(se.pairwise_rank_loss(scores_w, grades, (4, 3)), scores_w, create_graph=True)
        with pytest.raises(RuntimeError, match=SECOND_ORDER):
            (se.pairwise_rank_loss(scores_w, grades, (4, 3)) + g.pow(2).sum()).backward()
        with pytest.raises(RuntimeError, match=SECOND_ORDER):
            torch.autograd.grad(g.pow(2).sum(), w)

    def test_double_backward_through_the_upstream_gradient_raises_too(self):
        # d(grad)/d(upstream weight) would be lost as well: loss * c, differentiated in c.
        scores, grades = make_batch(8, (4,), seed=11)
        x = scores.clone().requires_grad_()
        c = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(se.pairwise_rank_loss(x, grades, 4) * c, x, create_graph=True)
        with pytest.raises(RuntimeError, match=SECOND_ORDER):
            torch.autograd.grad(g.sum(), c)

    def test_gradgradcheck_raises(self):
        scores = spread_scores(7, 2, 3).requires_grad_()
        _, grades = make_batch(7, (4, 3), seed=3)
        with pytest.raises(RuntimeError, match=SECOND_ORDER):
            torch.autograd.gradgradcheck(lambda s: se.pairwise_rank_loss(s, grades, (4, 3)), (scores,))

    @pytest.mark.parametrize("mining", [None, 10])
    def test_first_order_gradient_is_the_same_with_create_graph(self, mining):
        scores, grades = make_batch(12, TASK_KS, seed=12)
        x = scores.clone().requires_grad_()
        kw = dict(max_pairs=mining, generator=3, task_reduction="none")
        weights = torch.rand(len(TASK_KS), dtype=torch.float64)
        (plain,) = torch.autograd.grad((se.pairwise_rank_loss(x, grades, TASK_KS, **kw) * weights).sum(), x)
        (graph,) = torch.autograd.grad((se.pairwise_rank_loss(x, grades, TASK_KS, **kw) * weights).sum(), x,
                                       create_graph=True)
        assert torch.equal(graph.detach(), plain)
        # The reference's gradient (autograd through the plain formula).
        xr = scores.clone().requires_grad_()
        (expected,) = torch.autograd.grad((se.reference.pairwise_rank_loss(
            xr, grades, TASK_KS, task_reduction="none", pairs=se.mined_pairs(scores, grades, TASK_KS, max_pairs=mining,
                                                                              generator=3) if mining else None)
            * weights).sum(), xr)
        torch.testing.assert_close(plain, expected, rtol=1e-10, atol=1e-12)
        # Using the recorded gradient without differentiating it again is fine.
        x.grad = None
        loss = se.pairwise_rank_loss(x, grades, TASK_KS)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # backward(create_graph=True)'s reference-cycle warning
            loss.backward(create_graph=True)
        assert torch.isfinite(x.grad).all() and torch.equal(x.grad.detach(), torch.autograd.grad(
            se.pairwise_rank_loss(x, grades, TASK_KS), x)[0])
        x.grad = None


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
    reference and the CPU kernels. TestCuda below runs the CUDA op itself on
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


# ---------------------------------------------------------------------------
# CUDA against CPU

# The sorted all-pairs path (squared hinge) that the CUDA op takes for large
# batches; _cuda_sorted_min_batch moves its threshold so that small batches
# take it too. The same code without the kernel: TestGenericSortedPath.
@pytest.fixture
def cuda_sorted_path():
    with op_setting(ops._cuda_sorted_min_batch, 0):
        yield


class TestCuda:
    """The CUDA kernels against the CPU kernels and the reference. Skipped without a GPU.

    The CPU op is itself checked against the plain reference (TestValues,
    test_mined_pairs.py); here CUDA must agree with both: the same values and gradients
    (within float rounding: CUDA accumulates float32 inputs in float32) and the same
    pair counts. Mined pairs on CUDA: test_mined_pairs.py.
    """

    pytestmark = CUDA_TESTS

    @pytest.mark.parametrize("B", [1, 2, 17, 256, 257, 700])
    @pytest.mark.parametrize("pair_fn", ["squared_hinge", "logistic"])
    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    @pytest.mark.parametrize("grade_dtype", [torch.int64, torch.int32])
    def test_all_pairs_match_cpu_float64(self, B, pair_fn, reduction, grade_dtype):
        scores, grades = make_batch(B, TASK_KS, seed=B)
        grades = grades.to(grade_dtype)
        kw = dict(pair_fn=pair_fn, task_reduction=reduction)
        l_cpu, g_cpu, c_cpu = fused_loss_and_grad(scores, grades, TASK_KS, **kw)
        l_gpu, g_gpu, c_gpu = fused_loss_and_grad(scores.to(CUDA), grades.to(CUDA), TASK_KS, **kw)
        torch.testing.assert_close(l_gpu.cpu(), l_cpu, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g_gpu.cpu(), g_cpu, rtol=1e-10, atol=1e-12)
        assert torch.equal(c_gpu.cpu(), c_cpu)

    @pytest.mark.parametrize("options", [
        dict(),
        dict(severity_weight=False, lambda_sim=0.0),
        dict(pair_fn="logistic", lambda_sim=0.0, sigma=2.0),  # RankNet
        dict(margin_base=2.0, margin_scale=0.0),  # DeepRankSVM
        dict(pair_fn="logistic", lambda_sim=0.0, sigma=2.0, pair_normalization="all"),  # RankNet as published
        dict(margin_base=2.0, margin_scale=0.0, lambda_sim=0.0, pair_normalization="all"),  # DeepRankSVM as published
        dict(lambda_sim=0.4, pair_normalization="all"),
    ])
    def test_all_pairs_match_reference_float32(self, options):
        scores, grades = make_batch(300, TASK_KS, seed=5, dtype=torch.float32)
        ref_s = scores.double().requires_grad_()
        ref = reference.pairwise_rank_loss(ref_s, grades, TASK_KS, **options)
        (ref_g,) = torch.autograd.grad(ref, ref_s)
        loss, g, _ = fused_loss_and_grad(scores.to(CUDA), grades.to(CUDA), TASK_KS, **options)
        torch.testing.assert_close(loss.double().cpu(), ref.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g.double().cpu(), ref_g, rtol=1e-4, atol=1e-6)

    @pytest.mark.parametrize("max_pairs", [None, 3000])
    @cuda_only
    def test_bitwise_deterministic(self, max_pairs):
        scores, grades = make_batch(1500, TASK_KS, seed=9, dtype=torch.float32, ties=False, device=CUDA)
        first = fused_loss_and_grad(scores, grades, TASK_KS, max_pairs=max_pairs, generator=3)
        for _ in range(3):
            again = fused_loss_and_grad(scores, grades, TASK_KS, max_pairs=max_pairs, generator=3)
            for a, b in zip(first, again):
                assert torch.equal(a, b)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    @pytest.mark.parametrize("max_pairs", [None, 400])
    def test_low_precision_error_at_most_twice_pytorchs(self, dtype, max_pairs):
        # Against float64 on the same pairs: the fused op in `dtype` (float32
        # accumulation) may err at most about twice as much as PyTorch's own
        # computation in `dtype`.
        scores, grades = make_batch(256, TASK_KS, seed=10, dtype=torch.float64, ties=False, device=CUDA)
        low = scores.to(dtype)
        pairs = (se.mined_pairs(low, grades, TASK_KS, max_pairs=max_pairs, generator=1)
                 if max_pairs else None)

        def ref(s):
            s = s.detach().clone().requires_grad_()
            loss = reference.pairwise_rank_loss(s, grades, TASK_KS, pairs=pairs)
            (g,) = torch.autograd.grad(loss, s)
            return loss.double(), g.double()

        exact_l, exact_g = ref(low.double())
        torch_l, torch_g = ref(low)
        fused_l, fused_g, _ = fused_loss_and_grad(low, grades, TASK_KS, max_pairs=max_pairs, generator=1)
        scale_l, scale_g = exact_l.abs(), exact_g.abs().max()
        eps = torch.finfo(dtype).eps
        assert (fused_l.double() - exact_l).abs() <= 2 * (torch_l - exact_l).abs() + 2 * eps * scale_l
        assert (fused_g.double() - exact_g).abs().max() <= 2 * (torch_g - exact_g).abs().max() + 2 * eps * scale_g

    def test_empty_and_single_sample_give_zero(self):
        for B in (0, 1):
            scores, grades = make_batch(B, TASK_KS, seed=0, device=CUDA)
            for max_pairs in (None, 10):
                loss, g, counts = fused_loss_and_grad(scores, grades, TASK_KS, max_pairs=max_pairs, generator=0)
                assert loss.item() == 0.0 and not g.any() and not counts.any()

    @pytest.mark.parametrize("mining", [False, True])
    def test_opcheck_on_cuda(self, mining):
        scores, grades = make_batch(40, TASK_KS, seed=11, device=CUDA)
        seed = torch.tensor(42, device=CUDA) if mining else None
        args = (scores.requires_grad_(), grades, list(TASK_KS), 10.0, 0.5, 1.5, 1.0, 0.25, True, "squared_hinge",
                1.0, 60 if mining else -1, 0.7, "mean", seed)
        torch.library.opcheck(ops.pairwise_rank_loss.default, args)
        torch.library.opcheck(ops.mined_pairs.default,
                              (scores.detach(), grades, list(TASK_KS), 0.5, 1.5, 60, 0.7, torch.tensor(1)))
        torch.library.opcheck(ops.pairwise_rank_loss_backward.default,
                              (torch.tensor(0.5, device=CUDA, dtype=torch.float64), scores.detach()))

    @pytest.mark.parametrize("mode", [None, "reduce-overhead"])  # reduce-overhead: CUDA graphs
    @pytest.mark.parametrize("mining", [False, True])
    @cuda_only
    def test_compile_fullgraph_on_a_side_stream(self, mode, mining):
        scores, grades = make_batch(128, TASK_KS, seed=12, dtype=torch.float32, device=CUDA)
        seed = torch.tensor(7, device=CUDA)  # on the device: nothing for a graph to copy

        def step(s, grades, seed):
            loss, _, _ = ops.pairwise_rank_loss(
                s * 1.5, grades, list(TASK_KS), 10.0, 0.5, 1.5, 1.0, 0.25, True, "squared_hinge", 1.0,
                500 if mining else -1, 0.7, "mean", seed if mining else None)
            return loss

        def run(fn):
            out = []
            for _ in range(3):
                x = scores.clone().requires_grad_()
                loss = fn(x, grades, seed)
                loss.backward()
                out.append((loss.detach().clone(), x.grad.clone()))
            return out

        compiled = torch.compile(step, fullgraph=True, mode=mode)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            results, expected = run(compiled), run(step)
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        for (l_c, g_c), (l_e, g_e) in zip(results, expected):
            torch.testing.assert_close(l_c, l_e)
            torch.testing.assert_close(g_c, g_e)

    @cuda_only
    def test_bad_values_give_nan_without_a_sync_and_raise_with_sync_checks(self, monkeypatch):
        scores, grades = make_batch(30, TASK_KS, seed=13, missing=0.0, device=CUDA)
        grades[4, 2] = 4  # task 2 has K = 4
        loss, g, _ = fused_loss_and_grad(scores, grades, TASK_KS, task_reduction="none")
        assert torch.isnan(loss[2]) and torch.isfinite(loss[[0, 1, 3]]).all()
        assert torch.isnan(g[:, 2]).all() and torch.isfinite(g[:, 3]).all()
        monkeypatch.setenv("SPINERANK_EXT_SYNC_CHECKS", "1")
        with pytest.raises(ValueError, match=r"grade 4 at row 4, task 2 is out of range"):
            se.pairwise_rank_loss(scores, grades, TASK_KS)
        grades[4, 2] = 1
        scores[7, 5] = float("inf")
        with pytest.raises(ValueError, match=r"scores must be finite: got inf at row 7, task 5"):
            se.pairwise_rank_loss(scores, grades, TASK_KS, max_pairs=20, generator=1)

    @cuda_only
    def test_bad_arguments_on_cuda(self):
        scores, grades = make_batch(10, TASK_KS, seed=14, device=CUDA)
        with pytest.raises(ValueError, match="same device"):
            se.pairwise_rank_loss(scores, grades.cpu(), TASK_KS)
        wide = torch.zeros(4, 600, device=CUDA)
        with pytest.raises(ValueError, match="at most 512 tasks"):
            ops.pairwise_rank_loss(wide, wide.long(), [2] * 600, 10.0, 0.5, 1.5, 1.0, 0.25, True,
                                   "squared_hinge", 1.0, -1, 0.7, "mean", None)
        with pytest.raises(ValueError, match="at most 4096 grades"):
            se.pairwise_rank_loss(scores[:, :1], grades[:, :1], [5000])

    @cuda_only
    @pytest.mark.parametrize("B", [1, 2, 17, 700, 5000])
    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
    @pytest.mark.parametrize("normalization", ["per_kind", "all"])
    def test_sorted_path_on_cuda_matches_cpu(self, cuda_sorted_path, B, reduction, dtype, normalization):
        scores, grades = make_batch(B, TASK_KS, seed=B, dtype=dtype)
        scores = scores * 3.0 + 1e3 if dtype == torch.float64 else scores
        kw = dict(task_reduction=reduction, pair_normalization=normalization)
        l_cpu, g_cpu, c_cpu = fused_loss_and_grad(scores, grades, TASK_KS, **kw)
        l_gpu, g_gpu, c_gpu = fused_loss_and_grad(scores.to(CUDA), grades.to(CUDA), TASK_KS, **kw)
        tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(l_gpu.cpu(), l_cpu, **tol)
        torch.testing.assert_close(g_gpu.cpu(), g_cpu, **tol)
        assert torch.equal(c_gpu.cpu(), c_cpu)

    @cuda_only
    def test_sorted_path_on_cuda_at_the_default_threshold_and_bad_values(self, cuda_sorted_path):
        scores, grades = make_batch(20000, TASK_KS, seed=3, dtype=torch.float32, device=CUDA)
        ops._cuda_sorted_min_batch(16384)  # the default: B = 20000 takes the sorted path
        loss, g, counts = fused_loss_and_grad(scores, grades, TASK_KS, task_reduction="none")
        l_cpu, g_cpu, c_cpu = fused_loss_and_grad(scores.cpu(), grades.cpu(), TASK_KS, task_reduction="none")
        torch.testing.assert_close(loss.cpu(), l_cpu, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g.cpu(), g_cpu, rtol=1e-5, atol=1e-6)
        grades[4, 2] = 4  # task 2 has K = 4: NaN there, without a sync
        loss, g, _ = fused_loss_and_grad(scores, grades, TASK_KS, task_reduction="none")
        assert torch.isnan(loss[2]) and torch.isfinite(loss[[0, 1, 3]]).all()
        assert torch.isnan(g[:, 2]).all() and torch.isfinite(g[:, 3]).all()
