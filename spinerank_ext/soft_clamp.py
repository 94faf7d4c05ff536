"""The bounded score parameterisation of SPEC §3."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# beta * (distance of h past 0 or S) beyond which the result is exactly 0 or S
# in float32 and float64: softplus(-800) = log1p(exp(-800)) underflows to 0 in
# both. Clamping h there changes no result and keeps beta * h finite.
_SATURATION = 800.0

# (significand bits, smallest normal exponent) of each floating dtype.
_FORMATS = {
    torch.float16: (11, -14),
    torch.bfloat16: (8, -126),
    torch.float32: (24, -126),
    torch.float64: (53, -1022),
}


@torch.compiler.assume_constant_result
def _largest_at_most(value: float, dtype: torch.dtype) -> float:
    """The largest number of ``dtype`` that is <= ``value`` (> 0): ``value``
    itself when the dtype holds it, else ``value`` rounded down."""
    digits, emin = _FORMATS[dtype]
    top = torch.finfo(dtype).max
    if value >= top:
        return float(top)
    _, e = math.frexp(value)  # value = m * 2^e, 0.5 <= m < 1
    ulp = math.ldexp(1.0, max(e - 1, emin) - (digits - 1))
    return math.floor(value / ulp) * ulp


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # half and bfloat16 overflow in S * softplus(beta * h) (and round above S):
    # everything is computed in float32 at least.
    return torch.float64 if dtype == torch.float64 else torch.float32


def _softplus_terms(h, scale, beta):
    """sp(beta*x) and sp(beta*(S - x)) for x = h clamped where the result saturates."""
    x = h.to(_compute_dtype(h.dtype)).clamp(-_SATURATION / beta, scale + _SATURATION / beta)
    return x, F.softplus(beta * x), F.softplus(beta * (scale - x))


class _SoftClamp(torch.autograd.Function):
    # Autograd through the ratio a / (a + b) cancels to values like -1e-17 where
    # the true slope is ~0; the closed form below is a sum of non-negative terms.
    @staticmethod
    def forward(h, scale, beta):
        _, a, b = _softplus_terms(h, scale, beta)
        top = _largest_at_most(scale, h.dtype)
        # Clamped before the cast: top and 0 are numbers of the dtype, so rounding
        # to the nearest one (monotone) cannot take a value in [0, top] outside it.
        return (scale * a / (a + b)).clamp(0.0, top).to(h.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        h, scale, beta = inputs
        ctx.save_for_backward(h)
        ctx.scale, ctx.beta = scale, beta

    @staticmethod
    def backward(ctx, grad):
        (h,) = ctx.saved_tensors
        scale, beta = ctx.scale, ctx.beta
        x, a, b = _softplus_terms(h, scale, beta)
        slope = scale * beta * (torch.sigmoid(beta * x) * b + a * torch.sigmoid(beta * (scale - x))) / (a + b) ** 2
        return (grad.to(slope.dtype) * slope).to(h.dtype), None, None


def soft_clamp(h: torch.Tensor, scale: float = 10.0, beta: float = 5.0) -> torch.Tensor:
    """Map a raw head output ``h`` smoothly into [0, scale].

    ``s = S * sp(beta*h) / (sp(beta*h) + sp(beta*(S - h)))`` with sp = softplus.
    Near 0 and S it behaves like a clamp; in between it is close to the identity.

    For every floating dtype (float16, bfloat16, float32, float64) and every
    finite ``h`` up to the dtype's largest value, the result is finite and
    within [0, S], and its gradient is finite and non-negative. (When S is not
    a number of the dtype, the bound is the largest one below S.) How:
    float16 and bfloat16 are computed in float32 and cast back; ``h`` is
    clamped to [-800/beta, S + 800/beta], beyond which the result is already
    exactly 0 or S; the result is clamped into [0, S] (S: a number of the
    dtype) before the cast, so rounding to the nearest cannot pass S. The two softplus terms cannot both
    vanish since their arguments add up to beta*S. NaN gives NaN.

    ``scale`` and ``beta`` must be finite and > 0.
    """
    if not (math.isfinite(scale) and math.isfinite(beta) and scale > 0 and beta > 0):
        raise ValueError(f"soft_clamp needs finite scale > 0 and beta > 0, got scale={scale}, beta={beta}")
    return _SoftClamp.apply(h, float(scale), float(beta))
