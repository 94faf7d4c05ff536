"""Plain PyTorch soft_clamp, differentiated by autograd."""
from __future__ import annotations

import torch.nn.functional as F

__all__ = ["soft_clamp"]


def soft_clamp(h, scale=10.0, beta=5.0):
    """S * sp(beta*h) / (sp(beta*h) + sp(beta*(S - h))), differentiated by autograd."""
    lo = F.softplus(beta * h)
    hi = F.softplus(beta * (scale - h))
    return scale * lo / (lo + hi)
