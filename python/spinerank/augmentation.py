"""Training augmentation on whole batches (SPEC §5), and the evaluation crop.

Batches are augmented after collation, on the training device, so that one call
transforms the whole batch (with the fused ``spinerank_ext.augment`` op where it
exists). The returned ``flipped`` mask tells the caller which samples were
mirrored left-right, so their left/right labels can be swapped.
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
        if hasattr(spinerank_ext, "augment"):
            params = spinerank_ext.sample_augment_params(volumes.shape[0], generator=generator, **self.ranges)
            return spinerank_ext.augment(volumes, params.to(volumes.device), self.out_shape)
        return self._plain(volumes, generator)

    def _plain(self, volumes, generator):
        # Until the fused op exists: slice shift, flip, intensity offset and
        # integer translation (no rotation or scaling).
        B = volumes.shape[0]
        d, h, w = self.out_shape
        D, H, W = volumes.shape[-3:]
        r = self.ranges

        def randint(low, high):
            return torch.randint(low, high + 1, (B,), generator=generator).tolist()

        dz, dy, dx = randint(-r["slice_shift"], r["slice_shift"]), randint(-r["shift_h"], r["shift_h"]), \
            randint(-r["shift_w"], r["shift_w"])
        flipped = torch.rand(B, generator=generator) < r["flip"]
        offset = (torch.rand(B, generator=generator) * 2 - 1) * r["intensity"]
        out = volumes.new_zeros((B, volumes.shape[1], d, h, w))
        for b in range(B):
            sample = volumes[b]
            if flipped[b]:
                sample = sample.flip(-3)
            z0, y0, x0 = (D - d) // 2 + dz[b], (H - h) // 2 + dy[b], (W - w) // 2 + dx[b]
            # The window may reach outside the volume: copy the overlap, zeros elsewhere.
            src = [(max(o, 0), min(o + n, N)) for o, n, N in ((z0, d, D), (y0, h, H), (x0, w, W))]
            dst = [(s - o, e - o) for (s, e), o in zip(src, (z0, y0, x0))]
            if all(e > s for s, e in src):
                out[b, :, dst[0][0]:dst[0][1], dst[1][0]:dst[1][1], dst[2][0]:dst[2][1]] = \
                    sample[:, src[0][0]:src[0][1], src[1][0]:src[1][1], src[2][0]:src[2][1]]
            out[b] += offset[b].to(out.dtype)
        return out, flipped.to(volumes.device)
