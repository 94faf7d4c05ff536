import math

import pytest
import torch

from spinerank_ext import reference, soft_clamp


def softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@pytest.mark.parametrize("h", [-3.0, -0.2, 0.0, 0.1, 2.5, 5.0, 9.9, 10.0, 10.3, 14.0])
def test_matches_the_formula(h):
    S, beta = 10.0, 5.0
    a, b = softplus(beta * h), softplus(beta * (S - h))
    expected = S * a / (a + b)
    assert soft_clamp(torch.tensor(h, dtype=torch.float64)).item() == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bounded_and_finite_up_to_1e4(dtype):
    h = torch.cat([torch.linspace(-1e4, 1e4, 20001), torch.tensor([-1e4, 1e4, 0.0, 10.0])]).to(dtype).requires_grad_()
    s = soft_clamp(h)
    assert torch.isfinite(s).all() and (s >= 0).all() and (s <= 10).all()
    s.sum().backward()
    assert torch.isfinite(h.grad).all() and (h.grad >= 0).all()
    assert s[-4].item() == 0.0 and s[-3].item() == 10.0  # saturates exactly far out


@pytest.mark.parametrize("scale", [3.0, 7.0, 10.0])
def test_never_above_the_scale_in_float32(scale):
    # A dense grid where scale * a / (a + b) rounded one ulp above S in float32.
    h = torch.cat([torch.linspace(0, 30, 300001), torch.linspace(-2e4, 2e4, 400001)])
    s = soft_clamp(h, scale=scale)
    assert s.max().item() <= scale and s.min().item() >= 0.0


def test_monotone_and_near_identity_inside():
    h = torch.linspace(-2, 12, 1401, dtype=torch.float64)
    s = soft_clamp(h)
    assert (s.diff() >= 0).all()
    inside = (h > 1) & (h < 9)
    assert (s[inside] - h[inside]).abs().max() < 0.05


def test_other_scale_and_bad_parameters():
    assert soft_clamp(torch.tensor([100.0]), scale=3.0).item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="scale > 0 and beta > 0"):
        soft_clamp(torch.tensor([1.0]), beta=0.0)


def test_gradient_matches_reference_and_gradcheck():
    h = torch.linspace(-3, 13, 161, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(soft_clamp(h).sum(), h)
    (g_ref,) = torch.autograd.grad(reference.soft_clamp(h).sum(), h)
    # F.softplus is linear above 20, so autograd's slope there is off by ~e^-20.
    torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-15)
    assert torch.autograd.gradcheck(lambda x: soft_clamp(x, 4.0, 2.0), (h[::10].detach().clone().requires_grad_(),))


def test_compiles_fullgraph():
    h = torch.linspace(-20, 30, 101, requires_grad=True)
    out = torch.compile(soft_clamp, fullgraph=True)(h)
    torch.testing.assert_close(out, soft_clamp(h))
    out.sum().backward()
    assert torch.isfinite(h.grad).all()
