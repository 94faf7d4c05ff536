"""Plain PyTorch implementations of the spinerank_ext functions.

Written for clarity, not speed: they are the ground truth of the tests, the
baselines of the benchmarks, and the fallback when the compiled library cannot
be loaded. One module per wrapper module of the package: :mod:`.loss`
(``pairwise_rank_loss``, ``mined_pairs``), :mod:`.tta` (``tta_views``),
:mod:`.augmentation` (``augment``) and :mod:`.soft_clamp` (``soft_clamp``); the
functions are re-exported here, ``spinerank_ext.reference.<function>``.

Pairs are materialised as index lists over the batch (P = B(B-1)/2), so memory
grows with B^2.

The TTA and augmentation references are the plain PyTorch ways of doing the
same thing: a loop of crops and flips over a padded volume, and
``torch.nn.functional.grid_sample``.

The one intended difference from the fused ops: the random part of mining here
draws with ``torch.randperm``, the fused ops with Philox keys, so the two pick
different random pairs for the same seed. Pass ``pairs=`` (e.g. the output of
:func:`spinerank_ext.mined_pairs`) to evaluate the loss on exactly the pairs the
fused op kept.
"""
from .augmentation import augment
from .loss import mined_pairs, pairwise_rank_loss
from .soft_clamp import soft_clamp
from .tta import tta_views

__all__ = ["augment", "mined_pairs", "pairwise_rank_loss", "soft_clamp", "tta_views"]
