"""pairwise_rank_loss on CUDA against the CPU kernels and the reference (the
``cuda`` mark: SPINERANK_TEST_CUDA_AS=cpu runs them with the CPU standing in)."""
import pytest
import torch

import spinerank_ext as se
from spinerank_ext import reference

from conftest import CUDA, CUDA_TESTS, TASK_KS, cuda_only, fused_loss_and_grad, make_batch, op_setting

ops = torch.ops.spinerank_ext


# ---------------------------------------------------------------------------
# CUDA against CPU

# The sorted all-pairs path (squared hinge) that the CUDA op takes for large
# batches; _cuda_sorted_min_batch moves its threshold so that small batches
# take it too. The same code without the kernel: TestGenericSortedPath (test_sorted_pairs.py).
@pytest.fixture
def cuda_sorted_path():
    with op_setting(ops._cuda_sorted_min_batch, 0):
        yield


class TestCuda:
    """The CUDA kernels against the CPU kernels and the reference. Skipped without a GPU.

    The CPU op is itself checked against the plain reference (test_values.py,
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
