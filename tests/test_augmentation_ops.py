"""tta_views and augment as torch ops: bad inputs, opcheck, fake tensors,
torch.compile, the reference fallback, and CUDA against CPU."""
import os

import pytest
import torch

import spinerank_ext as se
from spinerank_ext import reference as ref

ops = torch.ops.spinerank_ext
GRID = ([False, True], [-16, 0, 16], [-16, 0, 16], [-1, 0, 1])
# SPINERANK_TEST_CUDA_AS=cpu: the CUDA tests run with the CPU standing in (as in test_cuda.py).
CUDA = os.environ.get("SPINERANK_TEST_CUDA_AS", "cuda")
needs_cuda = pytest.mark.skipif(CUDA == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")
cuda_only = pytest.mark.skipif(CUDA != "cuda", reason="CUDA-specific behaviour")


def vol5(N=2, C=1, D=7, H=20, W=24, dtype=torch.float32, device="cpu"):
    return torch.randn(N, C, D, H, W, generator=torch.Generator().manual_seed(N * 131 + D), dtype=dtype).to(device)


def params(N, seed=0, device="cpu"):
    return se.sample_augment_params(N, torch.Generator().manual_seed(seed)).to(device)


# ---------------------------------------------------------------------------
# Bad inputs: the public function, the reference and the op itself (whose C++
# checks repeat the Python ones word for word) all name the problem.

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


@pytest.mark.parametrize("case", TTA_ERRORS + TTA_PYTHON_ERRORS, ids=[c[0] for c in TTA_ERRORS + TTA_PYTHON_ERRORS])
def test_tta_views_bad_inputs(case):
    _, vol, out_size, kw, exc, pattern = case
    for fn in (se.tta_views, ref.tta_views):
        with pytest.raises(exc, match=pattern):
            fn(vol, out_size, **kw)
    if case in TTA_ERRORS:
        with pytest.raises(exc, match=pattern):
            ops.tta_views(*tta_op_args(vol, out_size, kw))


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


@pytest.mark.parametrize("case", AUGMENT_ERRORS, ids=[c[0] for c in AUGMENT_ERRORS])
def test_augment_bad_inputs(case):
    _, vol, p, out_size, exc, pattern = case
    for fn in (se.augment, ref.augment):
        with pytest.raises(exc, match=pattern):
            fn(vol, p, out_size)
    with pytest.raises(exc, match=pattern):
        ops.augment(vol, p, list(out_size))


def test_augment_params_not_a_tensor():
    with pytest.raises(TypeError, match=r"params must be a tensor, got tuple"):
        se.augment(vol5(), (0, 0, 0, 0, 0, 1, 0), (5, 16, 16))


# ---------------------------------------------------------------------------
# Registration: opcheck (schema, fake tensor, AOT dispatch), fake shapes, compile.

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grid", [GRID, ([True], [3], [-40, 0], [0, 9])])
def test_opcheck_tta_views(grid, dtype):
    torch.library.opcheck(ops.tta_views.default, (vol5(dtype=dtype), [5, 16, 16], *grid, 0.5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_augment(dtype):
    torch.library.opcheck(ops.augment.default, (vol5(N=3, C=2, dtype=dtype), params(3).to(dtype), [5, 16, 16]))


def test_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        vol = torch.empty(3, 2, 15, 192, 320)
        views = ops.tta_views(vol, [12, 128, 256], [True], [0, 1], [0], [-1, 0, 1], 0.0)
        assert views.shape == (3, 6, 2, 12, 128, 256)
        out, flipped = ops.augment(vol, torch.empty(3, 7), [12, 128, 256])
        assert out.shape == (3, 2, 12, 128, 256) and flipped.shape == (3,) and flipped.dtype == torch.bool
        with pytest.raises(ValueError, match=r"params must have shape \(N, 7\) with N = 3, got \[3, 6\]"):
            ops.augment(vol, torch.empty(3, 6), [12, 128, 256])
        with pytest.raises(ValueError, match=r"shifts_h must not be empty"):
            ops.tta_views(vol, [12, 128, 256], [True], [], [0], [0], 0.0)


@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph(dynamic):
    def step(vol, p):
        views = se.tta_views(vol * 2, (5, 16, 16), shifts_h=(-2, 0, 2), shifts_w=(0,), shifts_d=(0, 1))
        out, flipped = se.augment(vol + 1, p, (5, 16, 16))
        mean, std = se.tta_merge(views.flatten(2).mean(-1, keepdim=True), se.tta_view_flipped(
            shifts_h=(-2, 0, 2), shifts_w=(0,), shifts_d=(0, 1)), swap=())
        return views, out, flipped, mean, std

    compiled = torch.compile(step, fullgraph=True, dynamic=dynamic)
    for N in (2, 3):
        vol, p = vol5(N=N), params(N, seed=N)
        for a, b in zip(compiled(vol, p), step(vol, p)):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------
# Forward only: the outputs never require grad, whatever the inputs.

def tta_grid_kw():
    return dict(zip(("flips", "shifts_h", "shifts_w", "shifts_d"), GRID))


@pytest.mark.parametrize("vol_grad", [False, True])
@pytest.mark.parametrize("params_grad", [False, True])
def test_outputs_never_require_grad(vol_grad, params_grad):
    vol = vol5(N=3).requires_grad_(vol_grad)
    p = params(3).requires_grad_(params_grad)
    results = [se.augment(vol, p, (5, 16, 16)), ref.augment(vol, p, (5, 16, 16)),
               ops.augment(vol, p, [5, 16, 16])]
    for out, flipped in results:
        assert not out.requires_grad and not flipped.requires_grad and out.grad_fn is None
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    views = [se.tta_views(vol, (5, 16, 16)), ref.tta_views(vol, (5, 16, 16)), ops.tta_views(vol, [5, 16, 16], *GRID, 0.0)]
    for v in views:
        assert not v.requires_grad and v.grad_fn is None
    assert torch.equal(views[0], views[1]) and torch.equal(views[0], views[2])
    # The centre view is the crop itself, also for an input that requires grad.
    assert torch.equal(views[0][:, 13], vol.detach()[:, :, 1:6, 2:18, 4:20])
    if vol_grad:
        with pytest.raises(RuntimeError, match="does not require grad"):
            views[0].sum().backward()
        assert vol.grad is None


def test_outputs_never_require_grad_under_compile():
    vol = vol5().requires_grad_()
    step = torch.compile(lambda v, q: (se.tta_views(v * 2, (5, 16, 16)), se.augment(v + 1, q, (5, 16, 16))[0]),
                         fullgraph=True)
    views, out = step(vol, params(2))
    assert not views.requires_grad and not out.requires_grad
    torch.testing.assert_close(out, se.augment(vol.detach() + 1, params(2), (5, 16, 16))[0])


# ---------------------------------------------------------------------------
# Non-finite parameters: the sample is all zeros and not flipped; the other
# samples are computed as usual.

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


@pytest.mark.parametrize("bad", NON_FINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("column", range(7), ids=se.AUGMENT_PARAM_NAMES)
@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_non_finite_parameter_gives_a_zero_sample(impl, column, bad):
    fn = se.augment if impl == "fused" else ref.augment
    check_non_finite(fn, vol5(N=3, C=2), column, bad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_non_finite_parameter_in_low_precision_params(dtype):
    vol = vol5(N=3)
    p = flipped_identity_params(3, dtype)
    p[2, 2] = float("inf")
    for fn in (se.augment, ref.augment):
        out, flipped = fn(vol, p, (5, 16, 16))
        assert (out[2] == 0).all() and not flipped[2] and (out[0] != 0).any() and flipped[0]


def test_zero_scale_gives_a_zero_sample():
    vol = vol5(N=3)
    for fn in (se.augment, ref.augment):
        for scale in (0.0, -0.0, 1e-320):  # 1 / scale is not finite
            p = flipped_identity_params(3)
            p[0, 5] = scale
            out, flipped = fn(vol, p, (5, 16, 16))
            assert (out[0] == 0).all() and not flipped[0] and (out[1] != 0).any()


def test_several_bad_samples_and_columns():
    vol = vol5(N=3)
    p = flipped_identity_params(3)
    p[0, 0], p[0, 6], p[2, 3] = float("nan"), float("inf"), -float("inf")
    for fn in (se.augment, ref.augment):
        out, flipped = fn(vol, p, (5, 16, 16))
        assert (out[0] == 0).all() and (out[2] == 0).all() and flipped.tolist() == [False, True, False]
        assert torch.equal(out[1], fn(vol, flipped_identity_params(3), (5, 16, 16))[0][1])


def test_reference_fallback_without_the_compiled_library(tmp_path):
    import shutil
    import subprocess
    import sys
    import textwrap

    pkg = tmp_path / "spinerank_ext"
    shutil.copytree(se.__path__[0], pkg, ignore=shutil.ignore_patterns("_C*.so", "__pycache__"))
    code = textwrap.dedent("""
        import warnings, torch
        warnings.simplefilter("ignore")
        import spinerank_ext as se
        assert not se.has_compiled_ops()
        vol = torch.rand(2, 1, 7, 20, 24)
        views = se.tta_views(vol, (5, 16, 16))
        assert views.shape == (2, 54, 1, 5, 16, 16) and torch.equal(views[:, 13], vol[:, :, 1:6, 2:18, 4:20])
        out, flipped = se.augment(vol, torch.tensor([[0, 1, 0, 0, 0, 1, 0.0]] * 2), (5, 16, 16))
        assert torch.allclose(out, vol[:, :, 1:6, 2:18, 4:20].flip(2), atol=1e-5) and bool(flipped.all())
        # Forward only and non-finite parameters, as the op.
        vol.requires_grad_()
        assert not se.tta_views(vol, (5, 16, 16)).requires_grad
        out, flipped = se.augment(vol, torch.tensor([[0, 1, 0, 0, 0, 1, 0.0], [0, 1, float("nan"), 0, 0, 1, 0]]),
                                  (5, 16, 16))
        assert not out.requires_grad and flipped.tolist() == [True, False] and bool((out[1] == 0).all())
        print("fallback ok")
    """)
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path), "SPINERANK_EXT_REQUIRE_COMPILED": "0"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/",
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "fallback ok" in result.stdout


# ---------------------------------------------------------------------------
# CUDA against CPU (skipped without a GPU).

@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_tta_views_equals_cpu(dtype):
    vol = vol5(N=3, C=2, D=9, H=33, W=41, dtype=dtype)
    for out_size, grid in (((5, 20, 30), {}), ((11, 40, 50), {"shifts_h": (-30, 3), "shifts_d": (-6, 0, 4)})):
        for fill in (0.0, -1.5):
            cpu = se.tta_views(vol, out_size, fill=fill, **grid)
            gpu = se.tta_views(vol.to(CUDA), out_size, fill=fill, **grid)
            assert gpu.device.type == CUDA and torch.equal(gpu.cpu(), cpu)


@needs_cuda
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float64, 1e-12), (torch.float16, 2e-3),
                                        (torch.bfloat16, 1e-2)])
def test_cuda_augment_matches_cpu(dtype, atol):
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


@needs_cuda
@pytest.mark.parametrize("bad", NON_FINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("column", range(7), ids=se.AUGMENT_PARAM_NAMES)
def test_cuda_non_finite_parameter_gives_a_zero_sample(column, bad):
    vol = vol5(N=3, C=2).to(CUDA)
    check_non_finite(se.augment, vol, column, bad, device=CUDA)
    p = flipped_identity_params(3)
    p[1, column] = bad
    gpu, gpu_flipped = se.augment(vol, p.to(CUDA), (5, 16, 16))
    cpu, cpu_flipped = se.augment(vol.cpu(), p, (5, 16, 16))
    assert torch.equal(gpu.cpu(), cpu) and torch.equal(gpu_flipped.cpu(), cpu_flipped)


@needs_cuda
def test_cuda_outputs_never_require_grad():
    vol = vol5(device=CUDA).requires_grad_()
    assert not se.tta_views(vol, (5, 16, 16)).requires_grad
    assert not ops.tta_views(vol, [5, 16, 16], *GRID, 0.0).requires_grad
    out, flipped = se.augment(vol, params(2, device=CUDA).requires_grad_(), (5, 16, 16))
    assert not out.requires_grad and not flipped.requires_grad


@needs_cuda
@cuda_only
def test_cuda_empty_inputs_and_device_mismatch():
    vol = torch.zeros(0, 1, 8, 8, 8, device="cuda")
    assert se.tta_views(vol, (4, 4, 4)).shape == (0, 54, 1, 4, 4, 4)
    out, flipped = se.augment(torch.zeros(2, 0, 8, 8, 8, device="cuda"), params(2, device="cuda"), (4, 4, 4))
    assert out.shape == (2, 0, 4, 4, 4) and flipped.shape == (2,)
    with pytest.raises(ValueError, match=r"params must be on the device of vol \(cuda:0\), got cpu"):
        ops.augment(vol5(device="cuda"), params(2), [5, 16, 16])


@needs_cuda
def test_cuda_compile_and_opcheck():
    vol, p = vol5(device=CUDA), params(2, device=CUDA)
    torch.library.opcheck(ops.tta_views.default, (vol, [5, 16, 16], *GRID, 0.0))
    torch.library.opcheck(ops.augment.default, (vol, p, [5, 16, 16]))
    compiled = torch.compile(lambda v, q: se.augment(v * 2, q, (5, 16, 16))[0], fullgraph=True)
    torch.testing.assert_close(compiled(vol, p), se.augment(vol * 2, p, (5, 16, 16))[0])
