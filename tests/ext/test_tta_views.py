"""tta_views against its reference and SPEC §4 written out element by element;
tta_view_flipped; tta_merge; bad input; the op's registration; CUDA against CPU.

What tta_views shares with augment (fake tensors, torch.compile, forward only,
the reference fallback): test_tta_views_and_augment.py.
"""
import itertools

import pytest
import torch

import spinerank_ext as se
from spinerank_ext import reference as ref

from conftest import CUDA, CUDA_TESTS, GRID, key_phrase, vol5

ops = torch.ops.spinerank_ext


DEFAULT_GRID = {"flips": (False, True), "shifts_h": (-16, 0, 16), "shifts_w": (-16, 0, 16), "shifts_d": (-1, 0, 1)}


def volume(shape, dtype=torch.float64, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def spec_tta_views(vol, out_size, flips, shifts_h, shifts_w, shifts_d, fill):
    """SPEC §4 one element at a time, in plain Python."""
    N, C, D, H, W = vol.shape
    d, h, w = out_size
    z0, y0, x0 = (D - d) // 2, (H - h) // 2, (W - w) // 2
    src = vol.tolist()
    views = []
    for flip, dy, dx, dz in itertools.product(flips, shifts_h, shifts_w, shifts_d):  # the view order
        views.append([[[[[src[n][ch][z][y][x] if 0 <= z < D and 0 <= y < H and 0 <= x < W else fill
                          for j in range(w) for x in [x0 + j + dx]]
                         for i in range(h) for y in [y0 + i + dy]]
                        for k in range(d) for z in [z0 + (d - 1 - k if flip else k) + dz]]
                       for ch in range(C)] for n in range(N)])
    return torch.tensor(views, dtype=vol.dtype).transpose(0, 1)


# (vol shape, out_size, grid): odd sizes, crops whose centring rounds down, crops
# larger than the volume, shifts far outside it, one-entry and unsorted lists.
CASES = {
    "odd_sizes": ((2, 3, 9, 21, 17), (5, 11, 9), {"shifts_h": (-3, 0, 3), "shifts_w": (-2, 0, 2), "shifts_d": (-1, 0, 1)}),
    "rounded_centre": ((1, 2, 8, 20, 15), (3, 7, 6), {"shifts_h": (1,), "shifts_w": (-1, 4), "shifts_d": (2, 0)}),
    "crop_larger_than_volume": ((2, 1, 5, 9, 8), (7, 12, 11), {"shifts_h": (-2, 2), "shifts_w": (0,), "shifts_d": (-1, 1)}),
    "far_outside": ((1, 2, 6, 10, 12), (4, 6, 8), {"shifts_h": (-9, 40), "shifts_w": (-12, 5), "shifts_d": (-5, 3)}),
    "flipped_only": ((2, 1, 7, 12, 13), (5, 8, 9), {"flips": (True,), "shifts_h": (2, -1, 0), "shifts_w": (0,), "shifts_d": (1,)}),
    "duplicates": ((1, 1, 6, 8, 8), (4, 4, 4), {"flips": (True, False, True), "shifts_h": (0, 0), "shifts_w": (1,), "shifts_d": (0,)}),
}


class TestValues:
    """tta_views against its reference and SPEC §4 written out element by element."""

    @pytest.mark.parametrize("fill", [0.0, -2.5])
    @pytest.mark.parametrize("case", list(CASES))
    def test_matches_spec_element_by_element(self, case, fill):
        shape, out_size, grid = CASES[case]
        grid = {**DEFAULT_GRID, **grid}
        vol = volume(shape)
        expected = spec_tta_views(vol, out_size, fill=fill, **grid)
        assert torch.equal(se.tta_views(vol, out_size, fill=fill, **grid), expected)
        assert torch.equal(ref.tta_views(vol, out_size, fill=fill, **grid), expected)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
    @pytest.mark.parametrize("fill", [0.0, 3.0])
    @pytest.mark.parametrize("case", list(CASES))
    def test_bit_identical_to_reference(self, case, fill, dtype):
        shape, out_size, grid = CASES[case]
        vol = volume(shape, dtype, seed=1)
        out = se.tta_views(vol, out_size, fill=fill, **grid)
        assert out.dtype == dtype
        assert torch.equal(out, ref.tta_views(vol, out_size, fill=fill, **grid))

    def test_default_grid_has_54_views_and_view_13_is_the_centre_crop(self):
        vol = volume((2, 1, 15, 40, 48), torch.float32)
        out = se.tta_views(vol, (12, 24, 32))
        assert out.shape == (2, 54, 1, 12, 24, 32)
        assert torch.equal(out[:, 13], vol[:, :, 1:13, 8:32, 8:40])
        assert torch.equal(out, ref.tta_views(vol, (12, 24, 32)))
        # View 13 + 27 is the same crop, flipped along the slices.
        assert torch.equal(out[:, 40], vol[:, :, 1:13, 8:32, 8:40].flip(2))

    def test_multithreaded_kernel_matches_reference_at_benchmark_like_size(self):
        vol = volume((2, 1, 15, 96, 160), torch.float32, seed=2)
        out = se.tta_views(vol, (12, 64, 128), shifts_h=(-40, 0, 40), shifts_w=(-80, 0, 80), shifts_d=(-2, 0, 2))
        assert torch.equal(out, ref.tta_views(vol, (12, 64, 128), shifts_h=(-40, 0, 40), shifts_w=(-80, 0, 80),
                                              shifts_d=(-2, 0, 2)))

    def test_results_do_not_depend_on_thread_count(self):
        vol = volume((3, 2, 9, 40, 50), torch.float32, seed=3)
        before = torch.get_num_threads()
        try:
            outs = []
            for threads in (1, 2):
                torch.set_num_threads(threads)
                outs.append(se.tta_views(vol, (7, 30, 40)))
        finally:
            torch.set_num_threads(before)
        assert torch.equal(*outs)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
    def test_large_output_with_unaligned_rows_matches_reference(self, dtype):
        # 21 MB and 42 MB: outputs of 16 MB and more are streamed
        # (csrc/cpu/streaming_writes.h). Rows of 127 elements start off 16-byte
        # boundaries; the shifts put fill before, after and instead of rows and slices.
        vol = volume((2 if dtype == torch.float16 else 1, 1, 15, 96, 161), dtype, seed=5)
        grid = {"shifts_h": (-40, 0, 40), "shifts_w": (-45, 0, 45), "shifts_d": (-2, 0, 2)}
        expected = ref.tta_views(vol, (12, 64, 127), fill=-1.5, **grid)
        assert expected.nbytes >= 16 << 20
        before = torch.get_num_threads()
        try:
            for threads in (1, 2):
                torch.set_num_threads(threads)
                assert torch.equal(se.tta_views(vol, (12, 64, 127), fill=-1.5, **grid), expected)
        finally:
            torch.set_num_threads(before)

    def test_non_contiguous_input(self):
        base = volume((2, 3, 40, 30, 9), seed=4)
        vol = base.permute(0, 4, 1, 2, 3)  # (2, 9, 3, 40, 30), not contiguous
        assert torch.equal(se.tta_views(vol, (3, 20, 20)), ref.tta_views(vol.contiguous(), (3, 20, 20)))

    @pytest.mark.parametrize("shape", [(0, 1, 8, 8, 8), (2, 0, 8, 8, 8)])
    def test_empty_batch_or_channels(self, shape):
        out = se.tta_views(volume(shape), (4, 4, 4))
        assert out.shape == (shape[0], 54, shape[1], 4, 4, 4)

    def test_empty_volume_gives_fill(self):
        out = se.tta_views(volume((1, 1, 0, 8, 8)), (2, 3, 3), fill=7.0)
        assert out.shape == (1, 54, 1, 2, 3, 3) and bool((out == 7.0).all())


class TestViewFlipped:
    """tta_view_flipped: which views are flipped."""

    def test_view_flipped(self):
        assert torch.equal(se.tta_view_flipped(), torch.tensor([False] * 27 + [True] * 27))
        mask = se.tta_view_flipped(flips=(True, False), shifts_h=(0,), shifts_w=(1, 2), shifts_d=(0,))
        assert torch.equal(mask, torch.tensor([True, True, False, False]))


# ---------------------------------------------------------------------------
# tta_merge

def plain_merge(pred, flipped, swap):
    """Swap on flipped views, then mean and population std, one view at a time."""
    _N, V = pred.shape[:2]
    views = []
    for v in range(V):
        p = pred[:, v].clone()
        if flipped[v]:
            for a, b in swap:
                p[:, a], p[:, b] = pred[:, v, b], pred[:, v, a]
        views.append(p)
    mean = sum(views) / V
    var = sum((p - mean) ** 2 for p in views) / V
    return mean, var.sqrt()


MERGE_ERRORS = [
    ("2-D pred", torch.zeros(2, 54), se.tta_view_flipped(), {}, ValueError,
     r"pred must have shape \(N, V, T\) or \(N, V, T, K\), got \[2, 54\]"),
    ("integer pred", torch.zeros(2, 54, 11, dtype=torch.long), se.tta_view_flipped(), {}, ValueError,
     r"pred must be a floating tensor, got torch.int64"),
    ("mask length", torch.zeros(2, 54, 11), torch.zeros(27, dtype=torch.bool), {}, ValueError,
     r"view_flipped has 27 entries but pred has V = 54 views"),
    ("mask dtype", torch.zeros(2, 54, 11), torch.zeros(54), {}, ValueError,
     r"view_flipped must be a 1-D bool tensor or sequence"),
    ("swap out of range", torch.zeros(2, 54, 5), se.tta_view_flipped(), {}, ValueError,
     r"swap pair \(6, 7\) is out of range for T = 5 tasks \(pass swap=\(\) when"),
    ("swap overlap", torch.zeros(2, 54, 11), se.tta_view_flipped(), {"swap": ((1, 2), (2, 3))}, ValueError,
     r"swap pairs must name distinct tasks, each at most once"),
    ("swap shape", torch.zeros(2, 54, 11), se.tta_view_flipped(), {"swap": ((1, 2, 3),)}, ValueError,
     r"swap must be a sequence of \(task, task\) pairs"),
    ("empty list", [], se.tta_view_flipped(), {}, ValueError, r"pred must not be an empty list"),
    ("list entry rank", [torch.zeros(2, 54)], se.tta_view_flipped(), {"swap": ()}, ValueError,
     r"pred\[0\] must have shape \(N, V, K\), got \[2, 54\]"),
    ("list entry type", [torch.zeros(2, 54, 3), "x"], se.tta_view_flipped(), {"swap": ()}, TypeError,
     r"pred\[1\] must be a tensor, got str"),
    ("list N, V", [torch.zeros(2, 54, 3), torch.zeros(3, 54, 3)], se.tta_view_flipped(), {"swap": ()}, ValueError,
     r"pred\[1\] has \(N, V\) = \(3, 54\) but pred\[0\] has \(2, 54\)"),
    ("list swap shapes", [torch.zeros(2, 54, 3), torch.zeros(2, 54, 4)], se.tta_view_flipped(), {"swap": ((0, 1),)},
     ValueError, r"swap pair \(0, 1\): the tasks have different shapes \[2, 54, 3\] and \[2, 54, 4\]"),
]


class TestMerge:
    """tta_merge against a plain loop over the views; its bad input."""

    @pytest.mark.parametrize("swap", [((6, 7),), (), ((0, 3), (6, 7))])
    def test_merge_scores(self, swap):
        pred = volume((3, 54, 11), seed=5)
        flipped = se.tta_view_flipped()
        mean, std = se.tta_merge(pred, flipped, swap=swap)
        expected_mean, expected_std = plain_merge(pred, flipped, swap)
        torch.testing.assert_close(mean, expected_mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(std, expected_std, rtol=1e-12, atol=1e-12)

    def test_merge_swaps_left_and_right_on_flipped_views(self):
        # Every view agrees once flipped views are swapped back: no spread at all.
        pred = torch.zeros(1, 4, 8)
        pred[0, :, 6] = torch.tensor([1.0, 1.0, 2.0, 2.0])
        pred[0, :, 7] = torch.tensor([2.0, 2.0, 1.0, 1.0])
        mean, std = se.tta_merge(pred, torch.tensor([False, False, True, True]))
        assert torch.equal(mean[0, 6:], torch.tensor([1.0, 2.0]))
        assert torch.equal(std, torch.zeros(1, 8))

    def test_merge_logits_tensor_and_per_task_list(self):
        g = torch.Generator().manual_seed(6)
        ks = (5, 4, 4, 3, 4, 4, 4, 4, 4, 4, 4)
        per_task = [torch.randn(2, 54, k, generator=g, dtype=torch.float64) for k in ks]
        flipped = se.tta_view_flipped()
        means, stds = se.tta_merge(per_task, flipped)
        for t, (mean, std) in enumerate(zip(means, stds)):
            source = {6: 7, 7: 6}.get(t, t)
            aligned = torch.where(flipped.view(1, -1, 1), per_task[source], per_task[t])
            torch.testing.assert_close(mean, aligned.mean(1))
            torch.testing.assert_close(std, aligned.std(1, correction=0))
        # (N, V, T, K) with one K: the same as the list of its tasks.
        stacked = torch.stack(per_task[4:], dim=2)  # the tasks with K = 4: 4..10, swap (2, 3) = tasks (6, 7)
        mean, std = se.tta_merge(stacked, flipped, swap=((2, 3),))
        torch.testing.assert_close(mean, torch.stack(means[4:], dim=1))
        torch.testing.assert_close(std, torch.stack(stds[4:], dim=1))

    def test_merge_single_view_has_zero_std(self):
        mean, std = se.tta_merge(torch.ones(2, 1, 11), torch.tensor([True]))
        assert torch.equal(std, torch.zeros(2, 11)) and torch.equal(mean, torch.ones(2, 11))

    def test_merge_under_compile(self):
        pred = volume((2, 54, 11), torch.float32, seed=7)
        flipped = se.tta_view_flipped()
        compiled = torch.compile(lambda p, f: se.tta_merge(p, f), fullgraph=True)
        for a, b in zip(compiled(pred, flipped), se.tta_merge(pred, flipped)):
            torch.testing.assert_close(a, b)

    @pytest.mark.parametrize("case", MERGE_ERRORS, ids=[c[0] for c in MERGE_ERRORS])
    def test_merge_bad_inputs(self, case):
        _, pred, flipped, kw, exc, pattern = case
        with pytest.raises(exc, match=pattern):
            se.tta_merge(pred, flipped, **kw)


# ---------------------------------------------------------------------------
# Bad input

TTA_ERRORS = [
    ("4-D vol", torch.zeros(2, 7, 20, 24), (5, 16, 16), {}, ValueError,
     r"vol must have shape \(N, C, D, H, W\), got 4 dimension\(s\) \[2, 7, 20, 24\]"),
    ("integer vol", torch.zeros(2, 1, 7, 20, 24, dtype=torch.long), (5, 16, 16), {}, ValueError,
     r"vol must be a floating tensor, got"),
    ("out_size length", vol5(), (16, 16), {}, ValueError, r"out_size must be \(d, h, w\), got \[16, 16\]"),
    ("out_size zero", vol5(), (5, 0, 16), {}, ValueError, r"out_size must be positive, got \[5, 0, 16\]"),
    ("out_size negative", vol5(), (-5, 16, 16), {}, ValueError, r"out_size must be positive, got \[-5, 16, 16\]"),
    ("empty flips", vol5(), (5, 16, 16), {"flips": ()}, ValueError, r"flips must not be empty"),
    ("empty shifts_h", vol5(), (5, 16, 16), {"shifts_h": ()}, ValueError, r"shifts_h must not be empty"),
    ("empty shifts_w", vol5(), (5, 16, 16), {"shifts_w": []}, ValueError, r"shifts_w must not be empty"),
    ("empty shifts_d", vol5(), (5, 16, 16), {"shifts_d": ()}, ValueError, r"shifts_d must not be empty"),
    ("long list", vol5(), (5, 16, 16), {"shifts_d": tuple(range(65))}, ValueError,
     r"shifts_d has 65 entries, at most 64 are supported"),
    ("huge shift", vol5(), (5, 16, 16), {"shifts_w": (0, 2**41)}, ValueError,
     r"shifts_w\[1\] = 2199023255552 is out of range \(\|shift\| < 2\^40\)"),
]

# Type errors the op schema itself rejects; only the Python layers see them.
TTA_PYTHON_ERRORS = [
    ("not a tensor", [[1.0]], (5, 16, 16), {}, TypeError, r"vol must be a tensor, got list"),
    ("float out_size", vol5(), (5.0, 16, 16), {}, ValueError, r"out_size must be \(d, h, w\), got \[5.0, 16, 16\]"),
    ("int flips", vol5(), (5, 16, 16), {"flips": (0, 1)}, ValueError, r"flips must be a sequence of bools, got \(0, 1\)"),
    ("float shifts", vol5(), (5, 16, 16), {"shifts_h": (0.5,)}, ValueError,
     r"shifts_h must be a sequence of ints, got \(0.5,\)"),
]


def tta_op_args(vol, out_size, kw):
    flips, sh, sw, sd = GRID
    return (vol, list(out_size), list(kw.get("flips", flips)), list(kw.get("shifts_h", sh)),
            list(kw.get("shifts_w", sw)), list(kw.get("shifts_d", sd)), 0.0)


class TestBadInputs:
    """Bad inputs: the public function and the reference give the full message;
    the op itself (its C++ checks, the last line) names the same problem
    (conftest.key_phrase)."""

    @pytest.mark.parametrize("case", TTA_ERRORS + TTA_PYTHON_ERRORS, ids=[c[0] for c in TTA_ERRORS + TTA_PYTHON_ERRORS])
    def test_tta_views_bad_inputs(self, case):
        _, vol, out_size, kw, exc, pattern = case
        for fn in (se.tta_views, ref.tta_views):
            with pytest.raises(exc, match=pattern):
                fn(vol, out_size, **kw)
        if case in TTA_ERRORS:
            with pytest.raises(exc, match=key_phrase(pattern)):
                ops.tta_views(*tta_op_args(vol, out_size, kw))


class TestRegistration:
    """opcheck: schema, fake tensor, AOT dispatch."""

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    @pytest.mark.parametrize("grid", [GRID, ([True], [3], [-40, 0], [0, 9])])
    def test_opcheck_tta_views(self, grid, dtype):
        torch.library.opcheck(ops.tta_views.default, (vol5(dtype=dtype), [5, 16, 16], *grid, 0.5))


class TestCuda:
    """CUDA against CPU (skipped without a GPU)."""

    pytestmark = CUDA_TESTS

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
    def test_cuda_tta_views_equals_cpu(self, dtype):
        vol = vol5(N=3, C=2, D=9, H=33, W=41, dtype=dtype)
        for out_size, grid in (((5, 20, 30), {}), ((11, 40, 50), {"shifts_h": (-30, 3), "shifts_d": (-6, 0, 4)})):
            for fill in (0.0, -1.5):
                cpu = se.tta_views(vol, out_size, fill=fill, **grid)
                gpu = se.tta_views(vol.to(CUDA), out_size, fill=fill, **grid)
                assert gpu.device.type == CUDA and torch.equal(gpu.cpu(), cpu)
