"""spinerank_ext: fused torch ops for SpineRankNet.

    from spinerank_ext import PairwiseRankLoss
    loss_fn = PairwiseRankLoss(num_grades=[5, 4, 4])
    loss = loss_fn(scores, grades)  # scores (B, T) float, grades (B, T) int, -1 = missing

Test-time augmentation: :func:`tta_views`, :func:`tta_merge`; training
augmentation: :func:`sample_augment_params`, :func:`augment`.
Plain PyTorch versions of every function live in :mod:`spinerank_ext.reference`.
"""
from . import _library
from ._library import has_compiled_ops, has_cuda_ops

if _library.LOADED:
    from . import _ops  # noqa: F401  (fake kernels; autograd is registered in C++, csrc/autograd.cpp)

from . import reference
from .augmentation import AUGMENT_PARAM_NAMES, augment, sample_augment_params
from .loss import PairwiseRankLoss, mined_pairs, pairwise_rank_loss
from .soft_clamp import soft_clamp
from .tta import LEFT_RIGHT_TASKS, tta_merge, tta_view_flipped, tta_views

__version__ = "0.1.0"
__all__ = [
    "AUGMENT_PARAM_NAMES",
    "LEFT_RIGHT_TASKS",
    "PairwiseRankLoss",
    "augment",
    "has_compiled_ops",
    "has_cuda_ops",
    "mined_pairs",
    "pairwise_rank_loss",
    "reference",
    "sample_augment_params",
    "soft_clamp",
    "tta_merge",
    "tta_view_flipped",
    "tta_views",
]
