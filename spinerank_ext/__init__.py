"""spinerank_ext: fused torch ops for SpineRankNet.

    from spinerank_ext import PairwiseRankLoss
    loss_fn = PairwiseRankLoss(num_grades=[5, 4, 4])
    loss = loss_fn(scores, grades)  # scores (B, T) float, grades (B, T) int, -1 = missing

Plain PyTorch versions of every function live in :mod:`spinerank_ext.reference`.
"""
from . import _library
from ._library import has_compiled_ops, has_cuda_ops

if _library.LOADED:
    from . import _ops  # noqa: F401  (fake and autograd registrations)

from . import reference
from .loss import PairwiseRankLoss, mined_pairs, pairwise_rank_loss
from .soft_clamp import soft_clamp

__version__ = "0.1.0"
__all__ = [
    "PairwiseRankLoss",
    "pairwise_rank_loss",
    "mined_pairs",
    "soft_clamp",
    "reference",
    "has_compiled_ops",
    "has_cuda_ops",
]
