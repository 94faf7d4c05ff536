"""The bounded score parameterisation of SPEC §3."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_clamp(h: torch.Tensor, scale: float = 10.0, beta: float = 5.0) -> torch.Tensor:
    """Map a raw head output ``h`` smoothly into [0, scale].

    ``s = S * sp(beta*h) / (sp(beta*h) + sp(beta*(S - h)))`` with sp = softplus.
    Near 0 and S it behaves like a clamp; in between it is close to the identity.
    Finite for any finite ``h`` (checked up to |h| = 1e4 in float32): softplus never
    overflows, and the two softplus terms cannot both vanish because their
    arguments add up to beta*S.

    Plain PyTorch on purpose: it is elementwise, autograd differentiates it
    stably, and torch.compile fuses it into the surrounding head.
    """
    if not scale > 0 or not beta > 0:
        raise ValueError(f"soft_clamp needs scale > 0 and beta > 0, got scale={scale}, beta={beta}")
    lo = F.softplus(beta * h)
    hi = F.softplus(beta * (scale - h))
    return scale * lo / (lo + hi)
