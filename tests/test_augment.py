"""augment against its grid_sample reference and exact cases; sample_augment_params."""
import math

import pytest
import torch

import spinerank_ext as se
from spinerank_ext import reference as ref

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


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_random_params_match_grid_sample_reference(geometry, seed):
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
def test_low_precision_matches_float64_reference(dtype, atol):
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
def test_identity_is_the_centre_crop_exactly(geometry, dtype):
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
def test_integer_shifts_and_flips_are_exact(dtype):
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


def test_intensity_offset_reaches_the_volume_not_the_zero_outside():
    vol = volume((1, 1, 6, 10, 10), seed=8)
    out, _ = se.augment(vol, params_of((2, 0, 0.25, 0, 3, 1, 0)), (6, 10, 10))
    # dz = 2 vacates the last two slices; dx = 3 the last three columns.
    assert torch.equal(out[0, 0, :4, :, :7], vol[0, 0, 2:, :, 3:] + 0.25)
    assert bool((out[0, 0, 4:] == 0).all()) and bool((out[0, 0, :, :, 7:] == 0).all())


def test_rotation_by_90_degrees_turns_the_crop_clockwise():
    # Rotation about the crop centre: y = cy - v, x = cx + u for 90 degrees.
    vol = volume((1, 1, 3, 9, 9), seed=9)
    out, _ = se.augment(vol, params_of((0, 0, 0, 0, 0, 1, 90)), (3, 9, 9))
    torch.testing.assert_close(out, torch.rot90(vol, k=-1, dims=(3, 4)), rtol=0, atol=1e-12)


def test_scale_zooms_about_the_crop_centre():
    # scale 2: output pixel (i, j) reads the centre plus half its offset.
    vol = volume((1, 1, 1, 17, 17), seed=10)
    out, _ = se.augment(vol, params_of((0, 0, 0, 0, 0, 2, 0)), (1, 17, 17))
    assert torch.equal(out[..., ::2, ::2], vol[..., 4:13, 4:13])


def test_slice_shift_rounds_half_up_and_flip_at_one_half():
    vol = volume((2, 1, 9, 8, 8), seed=11)
    a, fa = se.augment(vol, params_of((0.5, 0.5, 0, 0, 0, 1, 0), (-1.5, 0.49, 0, 0, 0, 1, 0)), (5, 8, 8))
    b, fb = se.augment(vol, params_of((1, 1, 0, 0, 0, 1, 0), (-1, 0, 0, 0, 0, 1, 0)), (5, 8, 8))
    assert torch.equal(a, b) and torch.equal(fa, fb) and fa.tolist() == [True, False]


def test_non_finite_params_give_zeros_not_garbage():
    vol = volume((3, 1, 5, 8, 8), seed=12)
    nan, inf = math.nan, math.inf
    out, _ = se.augment(vol, params_of((nan, 0, 0, 0, 0, 1, 0), (0, 0, 0, 0, 0, 1, nan), (0, 0, 0, inf, 0, 1, 0)),
                        (5, 8, 8))
    assert torch.equal(out, torch.zeros_like(out))


def test_float32_params_and_non_contiguous_inputs():
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
def test_empty_inputs(shape):
    params = params_of(*[(0, 1, 0.5, 0, 0, 1, 0)] * shape[0])
    out, flipped = se.augment(volume(shape), params.reshape(shape[0], 7), (3, 4, 4))
    assert out.shape == (shape[0], shape[1], 3, 4, 4)
    assert torch.equal(out, torch.zeros_like(out))  # nothing inside: all zero, offset included
    assert flipped.shape == (shape[0],) and bool(flipped.all())


def test_results_do_not_depend_on_thread_count():
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

def test_sampled_params_cover_the_spec_ranges():
    p = se.sample_augment_params(20000, torch.Generator().manual_seed(15), dtype=torch.float64)
    assert p.shape == (20000, 7) and p.dtype == torch.float64
    dz, flip, intensity, dy, dx, scale, rotation = p.unbind(1)
    for column, lo, hi in ((dz, -2, 2), (dy, -24, 24), (dx, -32, 32)):  # integers, every value drawn
        assert torch.equal(column.unique(), torch.arange(lo, hi + 1, dtype=torch.float64))
    assert set(flip.unique().tolist()) == {0.0, 1.0} and abs(flip.mean().item() - 0.5) < 0.02
    for column, lo, hi in ((intensity, -0.1, 0.1), (scale, 0.9, 1.1), (rotation, -15.0, 15.0)):
        assert lo <= column.min().item() and column.max().item() < hi
        assert abs(column.mean().item() - (lo + hi) / 2) < 0.02 * (hi - lo)


def test_sampling_is_reproducible_with_a_generator():
    a = se.sample_augment_params(16, torch.Generator().manual_seed(3))
    b = se.sample_augment_params(16, torch.Generator().manual_seed(3))
    c = se.sample_augment_params(16, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32


def test_custom_ranges():
    p = se.sample_augment_params(500, torch.Generator().manual_seed(0), slice_shift=0, flip=1.0, intensity=0,
                                 shift_h=1, shift_w=0, scale=(1.25, 1.25), rotate_deg=0, dtype=torch.float64)
    assert bool((p[:, 0] == 0).all()) and bool((p[:, 1] == 1).all()) and bool((p[:, 2] == 0).all())
    assert set(p[:, 3].tolist()) == {-1.0, 0.0, 1.0} and bool((p[:, 4] == 0).all())
    assert bool((p[:, 5] == 1.25).all()) and bool((p[:, 6] == 0).all())
    assert not se.sample_augment_params(500, flip=0.0)[:, 1].any()
    assert se.sample_augment_params(0).shape == (0, 7)


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


@pytest.mark.parametrize("kwargs,pattern", SAMPLE_ERRORS, ids=[str(k) for k, _ in SAMPLE_ERRORS])
def test_sampling_bad_arguments(kwargs, pattern):
    kwargs = {"n": 4, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        se.sample_augment_params(**kwargs)
