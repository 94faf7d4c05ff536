"""augment against its grid_sample reference and exact cases; sample_augment_params;
bad input; the op's registration; non-finite parameters; CUDA against CPU.

What augment shares with tta_views (fake tensors, torch.compile, forward only,
the reference fallback): test_tta_views_and_augment.py.
"""
import math

import pytest
import torch

import spinerank_ext as se
from spinerank_ext import reference as ref

from conftest import CUDA, CUDA_TESTS, key_phrase, vol5
from conftest import augment_params as params

ops = torch.ops.spinerank_ext


IDENTITY = (0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def volume(shape, dtype=torch.float64, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def params_of(*rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


def centre_crop(vol, out_size):
    D, H, W = vol.shape[2:]
    d, h, w = out_size
    z0, y0, x0 = (D - d) // 2, (H - h) // 2, (W - w) // 2
    return vol[:, :, z0:z0 + d, y0:y0 + h, x0:x0 + w]


# (vol shape, out_size): odd sizes, a crop whose centring rounds down, a crop
# larger than the volume in every axis.
GEOMETRIES = {
    "odd": ((3, 2, 9, 31, 27), (7, 21, 17)),
    "rounded_centre": ((2, 1, 8, 20, 15), (5, 11, 8)),
    "crop_larger_than_volume": ((2, 2, 5, 12, 10), (7, 16, 14)),
}


class TestValues:
    """augment against its grid_sample reference and exact cases."""

    @pytest.mark.parametrize("seed", range(4))
    @pytest.mark.parametrize("geometry", list(GEOMETRIES))
    def test_random_params_match_grid_sample_reference(self, geometry, seed):
        shape, out_size = GEOMETRIES[geometry]
        vol = volume(shape, seed=seed)
        g = torch.Generator().manual_seed(100 + seed)
        # Wider than the defaults so that rotated and shifted crops leave the volume.
        params = se.sample_augment_params(shape[0], g, slice_shift=4, shift_h=8, shift_w=8, scale=(0.6, 1.5),
                                          rotate_deg=60.0, intensity=1.0, dtype=torch.float64)
        params[:, 3:5] += torch.rand(shape[0], 2, generator=g, dtype=torch.float64) - 0.5  # sub-voxel shifts
        out, flipped = se.augment(vol, params, out_size)
        expected, expected_flipped = ref.augment(vol, params, out_size)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
        assert torch.equal(flipped, expected_flipped)

    @pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
    def test_low_precision_matches_float64_reference(self, dtype, atol):
        # float32 coordinates inside grid_sample are off by up to ~1e-5 voxels at
        # these sizes, so the float32 output is checked against the float64
        # reference of the same (float32-representable) input.
        vol = volume((4, 1, 15, 64, 80), dtype, seed=5)
        params = se.sample_augment_params(4, torch.Generator().manual_seed(5))
        out, _ = se.augment(vol, params, (12, 48, 64))
        assert out.dtype == dtype
        expected, _ = ref.augment(vol.double(), params, (12, 48, 64))
        torch.testing.assert_close(out.double(), expected, rtol=0, atol=atol)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    @pytest.mark.parametrize("geometry", list(GEOMETRIES))
    def test_identity_is_the_centre_crop_exactly(self, geometry, dtype):
        shape, out_size = GEOMETRIES[geometry]
        vol = volume(shape, dtype, seed=6)
        out, flipped = se.augment(vol, params_of(*[IDENTITY] * shape[0], dtype=dtype), out_size)
        # Where the crop is larger than the volume, the pad is zero.
        expected = ref.tta_views(vol, out_size, flips=(False,), shifts_h=(0,), shifts_w=(0,), shifts_d=(0,))[:, 0]
        assert torch.equal(out, expected)
        assert not flipped.any()
        if geometry != "crop_larger_than_volume":
            assert torch.equal(out, centre_crop(vol, out_size))

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_integer_shifts_and_flips_are_exact(self, dtype):
        # Each row is a pure shift and/or flip: the same as the TTA view with that
        # shift and flip, zero-filled (slices and pixels moved in from outside).
        shape, out_size = (6, 2, 9, 24, 20), (7, 16, 12)
        vol = volume(shape, dtype, seed=7)
        rows = [(0, 1, 0, 0, 0, 1, 0), (2, 0, 0, 0, 0, 1, 0), (-3, 1, 0, 5, -7, 1, 0),
                (0, 0, 0, -6, 9, 1, 0), (1, 1, 0, 20, 0, 1, 0), (-1, 0, 0, 3, 3, 1, 0)]
        out, flipped = se.augment(vol, params_of(*rows, dtype=dtype), out_size)
        for n, (dz, flip, _, dy, dx, _, _) in enumerate(rows):
            view = ref.tta_views(vol[n:n + 1], out_size, flips=(bool(flip),), shifts_h=(dy,), shifts_w=(dx,),
                                 shifts_d=(dz,))[:, 0]
            assert torch.equal(out[n:n + 1], view), n
        assert flipped.tolist() == [bool(r[1]) for r in rows]

    def test_intensity_offset_reaches_the_volume_not_the_zero_outside(self):
        vol = volume((1, 1, 6, 10, 10), seed=8)
        out, _ = se.augment(vol, params_of((2, 0, 0.25, 0, 3, 1, 0)), (6, 10, 10))
        # dz = 2 vacates the last two slices; dx = 3 the last three columns.
        assert torch.equal(out[0, 0, :4, :, :7], vol[0, 0, 2:, :, 3:] + 0.25)
        assert bool((out[0, 0, 4:] == 0).all()) and bool((out[0, 0, :, :, 7:] == 0).all())

    def test_rotation_by_90_degrees_turns_the_crop_clockwise(self):
        # Rotation about the crop centre: y = cy - v, x = cx + u for 90 degrees.
        vol = volume((1, 1, 3, 9, 9), seed=9)
        out, _ = se.augment(vol, params_of((0, 0, 0, 0, 0, 1, 90)), (3, 9, 9))
        torch.testing.assert_close(out, torch.rot90(vol, k=-1, dims=(3, 4)), rtol=0, atol=1e-12)

    def test_scale_zooms_about_the_crop_centre(self):
        # scale 2: output pixel (i, j) reads the centre plus half its offset.
        vol = volume((1, 1, 1, 17, 17), seed=10)
        out, _ = se.augment(vol, params_of((0, 0, 0, 0, 0, 2, 0)), (1, 17, 17))
        assert torch.equal(out[..., ::2, ::2], vol[..., 4:13, 4:13])

    def test_slice_shift_rounds_half_up_and_flip_at_one_half(self):
        vol = volume((2, 1, 9, 8, 8), seed=11)
        a, fa = se.augment(vol, params_of((0.5, 0.5, 0, 0, 0, 1, 0), (-1.5, 0.49, 0, 0, 0, 1, 0)), (5, 8, 8))
        b, fb = se.augment(vol, params_of((1, 1, 0, 0, 0, 1, 0), (-1, 0, 0, 0, 0, 1, 0)), (5, 8, 8))
        assert torch.equal(a, b) and torch.equal(fa, fb) and fa.tolist() == [True, False]

    def test_non_finite_params_give_zeros_not_garbage(self):
        vol = volume((3, 1, 5, 8, 8), seed=12)
        nan, inf = math.nan, math.inf
        out, _ = se.augment(vol, params_of((nan, 0, 0, 0, 0, 1, 0), (0, 0, 0, 0, 0, 1, nan), (0, 0, 0, inf, 0, 1, 0)),
                            (5, 8, 8))
        assert torch.equal(out, torch.zeros_like(out))

    def test_float32_params_and_non_contiguous_inputs(self):
        vol = volume((2, 3, 16, 18, 7), seed=13).permute(0, 4, 1, 2, 3)  # (2, 7, 3, 16, 18), not contiguous
        params = se.sample_augment_params(2, torch.Generator().manual_seed(13), dtype=torch.float64)
        strided = torch.cat([params, params], dim=1)[:, :7]  # rows 14 apart: not contiguous
        out, _ = se.augment(vol, strided, (3, 10, 12))
        expected, _ = ref.augment(vol.contiguous(), params, (3, 10, 12))
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
        out32, _ = se.augment(vol, params.float(), (3, 10, 12))
        expected32, _ = ref.augment(vol, params.float().double(), (3, 10, 12))
        torch.testing.assert_close(out32, expected32, rtol=0, atol=1e-5)

    @pytest.mark.parametrize("shape", [(0, 1, 8, 8, 8), (2, 0, 8, 8, 8), (2, 1, 0, 8, 8), (2, 1, 4, 0, 0)])
    def test_empty_inputs(self, shape):
        params = params_of(*[(0, 1, 0.5, 0, 0, 1, 0)] * shape[0])
        out, flipped = se.augment(volume(shape), params.reshape(shape[0], 7), (3, 4, 4))
        assert out.shape == (shape[0], shape[1], 3, 4, 4)
        assert torch.equal(out, torch.zeros_like(out))  # nothing inside: all zero, offset included
        assert flipped.shape == (shape[0],) and bool(flipped.all())

    def test_results_do_not_depend_on_thread_count(self):
        vol = volume((8, 1, 15, 64, 80), torch.float32, seed=14)
        params = se.sample_augment_params(8, torch.Generator().manual_seed(14))
        before = torch.get_num_threads()
        try:
            outs = []
            for threads in (1, 2):
                torch.set_num_threads(threads)
                outs.append(se.augment(vol, params, (12, 48, 64))[0])
        finally:
            torch.set_num_threads(before)
        assert torch.equal(*outs)


# ---------------------------------------------------------------------------
# sample_augment_params

SAMPLE_ERRORS = [
    ({"n": -1}, r"n must be an int >= 0, got -1"),
    ({"n": 2.0}, r"n must be an int >= 0, got 2.0"),
    ({"slice_shift": -2}, r"slice_shift must be an int >= 0, got -2"),
    ({"shift_h": 2.5}, r"shift_h must be an int >= 0, got 2.5"),
    ({"shift_w": (0, 3)}, r"shift_w must be an int >= 0, got \(0, 3\)"),
    ({"intensity": -0.1}, r"intensity must be a number >= 0, got -0.1"),
    ({"rotate_deg": float("nan")}, r"rotate_deg must be a number >= 0, got nan"),
    ({"flip": 1.5}, r"flip must be a probability in \[0, 1\], got 1.5"),
    ({"scale": (0.0, 1.0)}, r"scale must be a \(low, high\) pair with 0 < low <= high, got \(0.0, 1.0\)"),
    ({"scale": (1.1, 0.9)}, r"scale must be a \(low, high\) pair with 0 < low <= high, got \(1.1, 0.9\)"),
    ({"scale": 1.0}, r"scale must be a \(low, high\) pair"),
]


class TestSampleParams:
    """sample_augment_params: ranges, reproducibility, bad arguments."""

    def test_sampled_params_cover_the_spec_ranges(self):
        p = se.sample_augment_params(20000, torch.Generator().manual_seed(15), dtype=torch.float64)
        assert p.shape == (20000, 7) and p.dtype == torch.float64
        dz, flip, intensity, dy, dx, scale, rotation = p.unbind(1)
        for column, lo, hi in ((dz, -2, 2), (dy, -24, 24), (dx, -32, 32)):  # integers, every value drawn
            assert torch.equal(column.unique(), torch.arange(lo, hi + 1, dtype=torch.float64))
        assert set(flip.unique().tolist()) == {0.0, 1.0} and abs(flip.mean().item() - 0.5) < 0.02
        for column, lo, hi in ((intensity, -0.1, 0.1), (scale, 0.9, 1.1), (rotation, -15.0, 15.0)):
            assert lo <= column.min().item() and column.max().item() < hi
            assert abs(column.mean().item() - (lo + hi) / 2) < 0.02 * (hi - lo)

    def test_sampling_is_reproducible_with_a_generator(self):
        a = se.sample_augment_params(16, torch.Generator().manual_seed(3))
        b = se.sample_augment_params(16, torch.Generator().manual_seed(3))
        c = se.sample_augment_params(16, torch.Generator().manual_seed(4))
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert a.dtype == torch.float32

    def test_custom_ranges(self):
        p = se.sample_augment_params(500, torch.Generator().manual_seed(0), slice_shift=0, flip=1.0, intensity=0,
                                     shift_h=1, shift_w=0, scale=(1.25, 1.25), rotate_deg=0, dtype=torch.float64)
        assert bool((p[:, 0] == 0).all()) and bool((p[:, 1] == 1).all()) and bool((p[:, 2] == 0).all())
        assert set(p[:, 3].tolist()) == {-1.0, 0.0, 1.0} and bool((p[:, 4] == 0).all())
        assert bool((p[:, 5] == 1.25).all()) and bool((p[:, 6] == 0).all())
        assert not se.sample_augment_params(500, flip=0.0)[:, 1].any()
        assert se.sample_augment_params(0).shape == (0, 7)

    @pytest.mark.parametrize("kwargs,pattern", SAMPLE_ERRORS, ids=[str(k) for k, _ in SAMPLE_ERRORS])
    def test_sampling_bad_arguments(self, kwargs, pattern):
        kwargs = {"n": 4, **kwargs}
        with pytest.raises(ValueError, match=pattern):
            se.sample_augment_params(**kwargs)


# ---------------------------------------------------------------------------
# Bad input

AUGMENT_ERRORS = [
    ("4-D vol", torch.zeros(2, 7, 20, 24), params(2), (5, 16, 16), ValueError,
     r"vol must have shape \(N, C, D, H, W\), got 4 dimension\(s\) \[2, 7, 20, 24\]"),
    ("out_size length", vol5(), params(2), (5, 16, 16, 1), ValueError,
     r"out_size must be \(d, h, w\), got \[5, 16, 16, 1\]"),
    ("out_size zero", vol5(), params(2), (0, 16, 16), ValueError, r"out_size must be positive, got \[0, 16, 16\]"),
    ("params columns", vol5(), torch.zeros(2, 6), (5, 16, 16), ValueError,
     r"params must have shape \(N, 7\) with N = 2, got \[2, 6\]"),
    ("params rows", vol5(), torch.zeros(3, 7), (5, 16, 16), ValueError,
     r"params must have shape \(N, 7\) with N = 2, got \[3, 7\]"),
    ("params rank", vol5(), torch.zeros(14), (5, 16, 16), ValueError,
     r"params must have shape \(N, 7\) with N = 2, got \[14\]"),
    ("integer params", vol5(), torch.zeros(2, 7, dtype=torch.long), (5, 16, 16), ValueError,
     r"params must be a floating tensor, got"),
    ("params device", vol5(), torch.zeros(2, 7, device="meta"), (5, 16, 16), ValueError,
     r"params must be on the device of vol \(cpu\), got meta"),
]


class TestBadInputs:
    """Bad inputs: the public function and the reference give the full message;
    the op itself (its C++ checks, the last line) names the same problem
    (conftest.key_phrase)."""

    @pytest.mark.parametrize("case", AUGMENT_ERRORS, ids=[c[0] for c in AUGMENT_ERRORS])
    def test_augment_bad_inputs(self, case):
        _, vol, p, out_size, exc, pattern = case
        for fn in (se.augment, ref.augment):
            with pytest.raises(exc, match=pattern):
                fn(vol, p, out_size)
        with pytest.raises(exc, match=key_phrase(pattern)):
            ops.augment(vol, p, list(out_size))

    def test_augment_params_not_a_tensor(self):
        with pytest.raises(TypeError, match=r"params must be a tensor, got tuple"):
            se.augment(vol5(), (0, 0, 0, 0, 0, 1, 0), (5, 16, 16))


class TestRegistration:
    """opcheck: schema, fake tensor, AOT dispatch."""

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_opcheck_augment(self, dtype):
        torch.library.opcheck(ops.augment.default, (vol5(N=3, C=2, dtype=dtype), params(3).to(dtype), [5, 16, 16]))


# ---------------------------------------------------------------------------
# Non-finite parameters

NON_FINITE = [float("nan"), float("inf"), -float("inf")]


def flipped_identity_params(N, dtype=torch.float64):
    # Sample n: flipped, intensity 0.25, shifted by (n, -n), a small rotation:
    # every column takes part, and every sample has non-zero output.
    rows = [[(-1) ** n, 1, 0.25, n, -n, 1.0 + 0.05 * n, 3.0 * n] for n in range(N)]
    return torch.tensor(rows, dtype=dtype)


def check_non_finite(fn, vol, column, bad, device="cpu"):
    clean = flipped_identity_params(3).to(device)
    p = clean.clone()
    p[1, column] = bad
    out, flipped = fn(vol, p, (5, 16, 16))
    expected, expected_flipped = fn(vol, clean, (5, 16, 16))
    assert torch.equal(out[1].cpu(), torch.zeros_like(out[1]).cpu()) and not bool(flipped[1])
    assert torch.equal(out[[0, 2]].cpu(), expected[[0, 2]].cpu())
    assert flipped[[0, 2]].tolist() == expected_flipped[[0, 2]].tolist() == [True, True]
    assert (expected[1] != 0).any()  # the clean sample is not all zeros


class TestNonFiniteParams:
    """Non-finite parameters: the sample is all zeros and not flipped; the other
    samples are computed as usual."""

    @pytest.mark.parametrize("bad", NON_FINITE, ids=["nan", "inf", "-inf"])
    @pytest.mark.parametrize("column", range(7), ids=se.AUGMENT_PARAM_NAMES)
    @pytest.mark.parametrize("impl", ["fused", "reference"])
    def test_non_finite_parameter_gives_a_zero_sample(self, impl, column, bad):
        fn = se.augment if impl == "fused" else ref.augment
        check_non_finite(fn, vol5(N=3, C=2), column, bad)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
    def test_non_finite_parameter_in_low_precision_params(self, dtype):
        vol = vol5(N=3)
        p = flipped_identity_params(3, dtype)
        p[2, 2] = float("inf")
        for fn in (se.augment, ref.augment):
            out, flipped = fn(vol, p, (5, 16, 16))
            assert (out[2] == 0).all() and not flipped[2] and (out[0] != 0).any() and flipped[0]

    def test_zero_scale_gives_a_zero_sample(self):
        vol = vol5(N=3)
        for fn in (se.augment, ref.augment):
            for scale in (0.0, -0.0, 1e-320):  # 1 / scale is not finite
                p = flipped_identity_params(3)
                p[0, 5] = scale
                out, flipped = fn(vol, p, (5, 16, 16))
                assert (out[0] == 0).all() and not flipped[0] and (out[1] != 0).any()

    def test_several_bad_samples_and_columns(self):
        vol = vol5(N=3)
        p = flipped_identity_params(3)
        p[0, 0], p[0, 6], p[2, 3] = float("nan"), float("inf"), -float("inf")
        for fn in (se.augment, ref.augment):
            out, flipped = fn(vol, p, (5, 16, 16))
            assert (out[0] == 0).all() and (out[2] == 0).all() and flipped.tolist() == [False, True, False]
            assert torch.equal(out[1], fn(vol, flipped_identity_params(3), (5, 16, 16))[0][1])


class TestCuda:
    """CUDA against CPU (skipped without a GPU)."""

    pytestmark = CUDA_TESTS

    @pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float64, 1e-12), (torch.float16, 2e-3),
                                            (torch.bfloat16, 1e-2)])
    def test_cuda_augment_matches_cpu(self, dtype, atol):
        vol = vol5(N=6, C=2, D=15, H=40, W=50, dtype=dtype)
        p = se.sample_augment_params(6, torch.Generator().manual_seed(1), slice_shift=5, shift_h=20, shift_w=20,
                                     rotate_deg=45.0)
        cpu, cpu_flipped = se.augment(vol, p, (12, 30, 36))
        gpu, gpu_flipped = se.augment(vol.to(CUDA), p.to(CUDA), (12, 30, 36))
        torch.testing.assert_close(gpu.cpu().double(), cpu.double(), rtol=0, atol=atol)
        assert torch.equal(gpu_flipped.cpu(), cpu_flipped)
        identity = torch.tensor([[0, 1, 0, 3, -2, 1, 0]] * 6, dtype=torch.float32)
        assert torch.equal(se.augment(vol.to(CUDA), identity.to(CUDA), (12, 30, 36))[0].cpu(),
                           se.augment(vol, identity, (12, 30, 36))[0])

    @pytest.mark.parametrize("bad", NON_FINITE, ids=["nan", "inf", "-inf"])
    @pytest.mark.parametrize("column", range(7), ids=se.AUGMENT_PARAM_NAMES)
    def test_cuda_non_finite_parameter_gives_a_zero_sample(self, column, bad):
        vol = vol5(N=3, C=2).to(CUDA)
        check_non_finite(se.augment, vol, column, bad, device=CUDA)
        p = flipped_identity_params(3)
        p[1, column] = bad
        gpu, gpu_flipped = se.augment(vol, p.to(CUDA), (5, 16, 16))
        cpu, cpu_flipped = se.augment(vol.cpu(), p, (5, 16, 16))
        assert torch.equal(gpu.cpu(), cpu) and torch.equal(gpu_flipped.cpu(), cpu_flipped)
