"""Training augmentation on whole batches (SPEC §5), and the evaluation crop.

Batches are augmented after collation, on the training device, so that one call
of the fused ``spinerank_ext.augment`` op transforms the whole batch: slice shift,
left-right flip, intensity offset, translation, in-plane scale and rotation. The
returned ``flipped`` mask tells the caller which samples were mirrored
left-right, so their left/right labels can be swapped.
"""
from __future__ import annotations

import torch

import spinerank_ext


def centre_crop(volumes: torch.Tensor, out_shape) -> torch.Tensor:
    """(B, C, D, H, W) -> (B, C, *out_shape), the centred window (SPEC §4 offsets)."""
    d, h, w = out_shape
    D, H, W = volumes.shape[-3:]
    z0, y0, x0 = (D - d) // 2, (H - h) // 2, (W - w) // 2
    return volumes[..., z0:z0 + d, y0:y0 + h, x0:x0 + w]


def swap_flipped(grades: torch.Tensor, flipped: torch.Tensor, permutation) -> torch.Tensor:
    """Grades of flipped samples with their task columns permuted (left <-> right)."""
    perm = torch.as_tensor(permutation, device=grades.device)
    return torch.where(flipped.to(grades.device)[:, None], grades[:, perm], grades)


class TrainAugment:
    """Random per-sample augmentation with the config's ranges."""

    def __init__(self, config):
        self.out_shape = tuple(config.input_shape)
        self.ranges = dict(slice_shift=config.aug_slice_shift, flip=config.aug_flip,
                           intensity=config.aug_intensity, shift_h=config.aug_shift_h,
                           shift_w=config.aug_shift_w, scale=tuple(config.aug_scale),
                           rotate_deg=config.aug_rotate_deg)

    def __call__(self, volumes: torch.Tensor, generator: torch.Generator):
        """(augmented (B, C, *input_shape), flipped (B,) bool) with parameters drawn from ``generator``."""
        params = spinerank_ext.sample_augment_params(volumes.shape[0], generator=generator, **self.ranges)
        return spinerank_ext.augment(volumes, params.to(volumes.device), self.out_shape)
