"""The bounded score parameterisation of SPEC §3."""
from __future__ import annotations

import torch
import torch.nn.functional as F


class _SoftClamp(torch.autograd.Function):
    # Autograd through the ratio a / (a + b) cancels to values like -1e-17 where
    # the true slope is ~0; the closed form below is a sum of non-negative terms.
    @staticmethod
    def forward(h, scale, beta):
        a = F.softplus(beta * h)
        b = F.softplus(beta * (scale - h))
        # The ratio first: a / (a + b) <= 1 exactly (b >= 0), so the score never
        # rounds above S (scale * a / (a + b) did, by one ulp, in float32).
        return scale * (a / (a + b))

    @staticmethod
    def setup_context(ctx, inputs, output):
        h, scale, beta = inputs
        ctx.save_for_backward(h)
        ctx.scale, ctx.beta = scale, beta

    @staticmethod
    def backward(ctx, grad):
        (h,) = ctx.saved_tensors
        scale, beta = ctx.scale, ctx.beta
        a = F.softplus(beta * h)
        b = F.softplus(beta * (scale - h))
        slope = scale * beta * (torch.sigmoid(beta * h) * b + a * torch.sigmoid(beta * (scale - h))) / (a + b) ** 2
        return grad * slope, None, None


def soft_clamp(h: torch.Tensor, scale: float = 10.0, beta: float = 5.0) -> torch.Tensor:
    """Map a raw head output ``h`` smoothly into [0, scale].

    ``s = S * sp(beta*h) / (sp(beta*h) + sp(beta*(S - h)))`` with sp = softplus.
    Near 0 and S it behaves like a clamp; in between it is close to the identity.
    Finite, within [0, S] and with a non-negative slope for any finite ``h``
    (checked up to |h| = 1e4 in float32 and float64): softplus never overflows,
    and the two softplus terms cannot both vanish since their arguments add up
    to beta*S.
    """
    if not scale > 0 or not beta > 0:
        raise ValueError(f"soft_clamp needs scale > 0 and beta > 0, got scale={scale}, beta={beta}")
    return _SoftClamp.apply(h, float(scale), float(beta))
