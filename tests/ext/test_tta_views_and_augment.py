"""What tta_views and augment share as forward-only torch ops: fake tensors and
torch.compile, outputs that never require grad, the reference fallback without
the compiled library, and the same on CUDA. Each op on its own:
test_tta_views.py, test_augment.py.
"""
import pytest
import torch

import spinerank_ext as se
from spinerank_ext import reference as ref

from conftest import CUDA, CUDA_TESTS, GRID, cuda_only, vol5
from conftest import augment_params as params

ops = torch.ops.spinerank_ext


class TestRegistration:
    """Fake shapes and torch.compile of both ops together."""

    def test_fake_tensor_shapes(self):
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
    def test_compile_fullgraph(self, dynamic):
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


def tta_grid_kw():
    return dict(zip(("flips", "shifts_h", "shifts_w", "shifts_d"), GRID))


class TestForwardOnly:
    """Forward only: the outputs never require grad, whatever the inputs."""

    @pytest.mark.parametrize("vol_grad", [False, True])
    @pytest.mark.parametrize("params_grad", [False, True])
    def test_outputs_never_require_grad(self, vol_grad, params_grad):
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

    def test_outputs_never_require_grad_under_compile(self):
        vol = vol5().requires_grad_()
        step = torch.compile(lambda v, q: (se.tta_views(v * 2, (5, 16, 16)), se.augment(v + 1, q, (5, 16, 16))[0]),
                             fullgraph=True)
        views, out = step(vol, params(2))
        assert not views.requires_grad and not out.requires_grad
        torch.testing.assert_close(out, se.augment(vol.detach() + 1, params(2), (5, 16, 16))[0])


class TestReferenceFallback:
    """Without the compiled library both ops run their reference."""

    def test_reference_fallback_without_the_compiled_library(self, tmp_path):
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


class TestCuda:
    """Both ops on CUDA (skipped without a GPU)."""

    pytestmark = CUDA_TESTS

    def test_cuda_outputs_never_require_grad(self):
        vol = vol5(device=CUDA).requires_grad_()
        assert not se.tta_views(vol, (5, 16, 16)).requires_grad
        assert not ops.tta_views(vol, [5, 16, 16], *GRID, 0.0).requires_grad
        out, flipped = se.augment(vol, params(2, device=CUDA).requires_grad_(), (5, 16, 16))
        assert not out.requires_grad and not flipped.requires_grad

    @cuda_only
    def test_cuda_empty_inputs_and_device_mismatch(self):
        vol = torch.zeros(0, 1, 8, 8, 8, device="cuda")
        assert se.tta_views(vol, (4, 4, 4)).shape == (0, 54, 1, 4, 4, 4)
        out, flipped = se.augment(torch.zeros(2, 0, 8, 8, 8, device="cuda"), params(2, device="cuda"), (4, 4, 4))
        assert out.shape == (2, 0, 4, 4, 4) and flipped.shape == (2,)
        with pytest.raises(ValueError, match=r"params must be on the device of vol \(cuda:0\), got cpu"):
            ops.augment(vol5(device="cuda"), params(2), [5, 16, 16])

    def test_cuda_compile_and_opcheck(self):
        vol, p = vol5(device=CUDA), params(2, device=CUDA)
        torch.library.opcheck(ops.tta_views.default, (vol, [5, 16, 16], *GRID, 0.0))
        torch.library.opcheck(ops.augment.default, (vol, p, [5, 16, 16]))
        compiled = torch.compile(lambda v, q: se.augment(v * 2, q, (5, 16, 16))[0], fullgraph=True)
        torch.testing.assert_close(compiled(vol, p), se.augment(vol * 2, p, (5, 16, 16))[0])
