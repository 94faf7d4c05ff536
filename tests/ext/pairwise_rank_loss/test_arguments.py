"""pairwise_rank_loss's arguments: bad input (through the wrapper and through a
direct op call), the cached argument checks, and the limits: K, max_pairs, the
generator, unsigned grades."""
import pytest
import torch

import spinerank_ext as se
from spinerank_ext import _validate
from spinerank_ext import reference as ref

from conftest import TASK_KS

ops = torch.ops.spinerank_ext


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
