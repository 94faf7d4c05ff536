"""soft_clamp: the formula, bounds, monotonicity, gradient and torch.compile;
every floating dtype and every finite input."""
import math

import pytest
import torch

from spinerank_ext import reference, soft_clamp


def softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


class TestSoftClamp:
    """The formula, its bounds, gradient and torch.compile."""

    @pytest.mark.parametrize("h", [-3.0, -0.2, 0.0, 0.1, 2.5, 5.0, 9.9, 10.0, 10.3, 14.0])
    def test_matches_the_formula(self, h):
        S, beta = 10.0, 5.0
        a, b = softplus(beta * h), softplus(beta * (S - h))
        expected = S * a / (a + b)
        assert soft_clamp(torch.tensor(h, dtype=torch.float64)).item() == pytest.approx(expected, rel=1e-14)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_bounded_and_finite_up_to_1e4(self, dtype):
        h = torch.cat([torch.linspace(-1e4, 1e4, 20001), torch.tensor([-1e4, 1e4, 0.0, 10.0])]).to(dtype).requires_grad_()
        s = soft_clamp(h)
        assert torch.isfinite(s).all() and (s >= 0).all() and (s <= 10).all()
        s.sum().backward()
        assert torch.isfinite(h.grad).all() and (h.grad >= 0).all()
        assert s[-4].item() == 0.0 and s[-3].item() == 10.0  # saturates exactly far out

    @pytest.mark.parametrize("scale", [3.0, 7.0, 10.0])
    def test_never_above_the_scale_in_float32(self, scale):
        # A dense grid where scale * a / (a + b) rounded one ulp above S in float32.
        h = torch.cat([torch.linspace(0, 30, 300001), torch.linspace(-2e4, 2e4, 400001)])
        s = soft_clamp(h, scale=scale)
        assert s.max().item() <= scale and s.min().item() >= 0.0

    def test_monotone_and_near_identity_inside(self):
        h = torch.linspace(-2, 12, 1401, dtype=torch.float64)
        s = soft_clamp(h)
        assert (s.diff() >= 0).all()
        inside = (h > 1) & (h < 9)
        assert (s[inside] - h[inside]).abs().max() < 0.05

    def test_other_scale_and_bad_parameters(self):
        assert soft_clamp(torch.tensor([100.0]), scale=3.0).item() == pytest.approx(3.0)
        with pytest.raises(ValueError, match="scale > 0 and beta > 0"):
            soft_clamp(torch.tensor([1.0]), beta=0.0)

    def test_gradient_matches_reference_and_gradcheck(self):
        h = torch.linspace(-3, 13, 161, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(soft_clamp(h).sum(), h)
        (g_ref,) = torch.autograd.grad(reference.soft_clamp(h).sum(), h)
        # F.softplus is linear above 20, so autograd's slope there is off by ~e^-20.
        torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-15)
        assert torch.autograd.gradcheck(lambda x: soft_clamp(x, 4.0, 2.0), (h[::10].detach().clone().requires_grad_(),))

    def test_compiles_fullgraph(self):
        h = torch.linspace(-20, 30, 101, requires_grad=True)
        out = torch.compile(soft_clamp, fullgraph=True)(h)
        torch.testing.assert_close(out, soft_clamp(h))
        out.sum().backward()
        assert torch.isfinite(h.grad).all()


# ---------------------------------------------------------------------------
# Every floating dtype

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def largest_at_most(value, dtype):
    """The largest finite number of ``dtype`` <= value, by enumerating the
    positive float16/bfloat16 bit patterns, or one nextafter for float32/64."""
    if dtype in (torch.float16, torch.bfloat16):
        bits = torch.arange(0, 2**15, dtype=torch.int32).to(torch.int16)
        numbers = bits.view(dtype).double()
        numbers = numbers[torch.isfinite(numbers)]
        return numbers[numbers <= value].max().item()
    x = torch.tensor(value, dtype=torch.float64).to(dtype)
    if x.double().item() > value:
        x = torch.nextafter(x, torch.tensor(0.0, dtype=dtype))
    return x.item()


def h_grid(dtype):
    """Magnitudes from 1e-3 up to finfo.max, both signs, and a fine grid around [0, S]."""
    top = torch.finfo(dtype).max
    mag = torch.logspace(-3, math.log10(top), 1500, dtype=torch.float64).clamp(max=top)
    h = torch.cat([mag, -mag, torch.linspace(-30, 40, 7001, dtype=torch.float64),
                   torch.tensor([top, -top, 0.0, 1320.0, 2000.0, 9.96, 10.04], dtype=torch.float64)])
    h = h.to(dtype)
    assert torch.isfinite(h).all()
    return h


class TestEveryDtype:
    """Every floating dtype, every finite h (issue 13: float16 gave inf from
    h ~ 1320, bfloat16 gave 10.0625 > S)."""

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("scale,beta", [(10.0, 5.0), (0.1, 5.0), (3.3, 0.5), (10.0, 80.0)])
    def test_finite_and_bounded_for_every_finite_h(self, dtype, scale, beta):
        h = h_grid(dtype).requires_grad_()
        s = soft_clamp(h, scale, beta)
        assert s.dtype == dtype
        top = largest_at_most(scale, dtype)
        assert top <= scale
        assert torch.isfinite(s).all() and (s >= 0).all() and (s.double() <= top).all()
        s.sum().backward()
        assert torch.isfinite(h.grad).all() and (h.grad >= 0).all()
        # Far out it saturates at 0 and at the bound.
        far = torch.tensor([-torch.finfo(dtype).max, torch.finfo(dtype).max], dtype=dtype)
        assert soft_clamp(far, scale, beta).double().tolist() == [0.0, top]

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_every_dtype_is_close_to_the_float64_value(self, dtype):
        # float16 and bfloat16 are computed in float32 and cast once: within the
        # dtype's rounding (eps relative) of the float64 reference; float32 and
        # float64 within a few rounding errors of their own.
        h = torch.linspace(-3, 13, 1601, dtype=torch.float64).to(dtype)
        expected = reference.soft_clamp(h.double())
        got = soft_clamp(h).double()
        eps = torch.finfo(dtype).eps * (16 if dtype in (torch.float32, torch.float64) else 1)
        assert ((got - expected).abs() <= eps * expected.abs().clamp(min=1e-3)).all()

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_gradient_in_every_dtype_matches_float64(self, dtype):
        h = torch.linspace(-2, 12, 141, dtype=torch.float64).to(dtype).requires_grad_()
        soft_clamp(h).sum().backward()
        h64 = h.detach().double().requires_grad_()
        soft_clamp(h64).sum().backward()
        assert h.grad.dtype == dtype
        torch.testing.assert_close(h.grad.double(), h64.grad, rtol=4 * torch.finfo(dtype).eps, atol=1e-6)

    @pytest.mark.parametrize("scale,beta", [(float("inf"), 5.0), (10.0, float("inf")), (float("nan"), 5.0), (-1.0, 5.0)])
    def test_non_finite_or_negative_parameters(self, scale, beta):
        with pytest.raises(ValueError, match="finite scale > 0 and beta > 0"):
            soft_clamp(torch.tensor([1.0]), scale, beta)
