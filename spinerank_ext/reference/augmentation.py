"""Plain PyTorch augment (SPEC §5): slices picked by indexing, then ``torch.nn.functional.grid_sample``."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _validate

__all__ = ["augment"]


def augment(vol, params, out_size):
    """Training augmentation (SPEC §5) from ``grid_sample``: (out, flipped).

    ``params`` (N, 7) is laid out as for :func:`spinerank_ext.augment`. Slices
    are picked by indexing; the in-plane resampling is one bilinear
    ``grid_sample`` (zero padding) of every slice of a sample on its own grid,
    computed in float64 and cast to the volume's dtype.

    A sample with a non-finite parameter (NaN, +-inf) or scale = 0 is all zeros
    with flipped False, as in the op. Forward only: the result never requires grad.
    """
    _validate.volume(vol)
    d, h, w = _validate.out_size(out_size)
    _validate.augment_params(vol, params)
    vol = vol.detach()
    N, C, D, H, W = vol.shape
    z0, y0, x0 = (D - d) // 2, (H - h) // 2, (W - w) // 2
    work = vol.dtype if vol.dtype in (torch.float32, torch.float64) else torch.float32
    p = params.detach().to(torch.float64)
    valid = torch.isfinite(p).all(dim=1) & torch.isfinite(1 / p[:, 5])  # (N,)
    identity = torch.tensor([0, 0, 0, 0, 0, 1, 0], dtype=torch.float64, device=p.device)
    p = torch.where(valid[:, None], p, identity)  # computed on, then zeroed below
    # Slice shifts beyond +-2^50 leave every slice outside any volume (as kFarAway does).
    dz = torch.floor(p[:, 0] + 0.5).clamp(-(2**50), 2**50).long()
    flipped = (p[:, 1] >= 0.5) & valid

    # Slices: out slice k shows input slice z0 + (flip ? d-1-k : k) + dz; the
    # offset is added before resampling and vacated slices are zero.
    k = torch.arange(d, device=vol.device)
    source = z0 + torch.where(flipped[:, None], d - 1 - k, k) + dz[:, None]  # (N, d)
    inside = (source >= 0) & (source < D)
    if D == 0:
        slices = vol.new_zeros((N, C, d, H, W), dtype=work)
    else:
        rows = torch.arange(N, device=vol.device)[:, None]
        slices = vol.to(work)[rows, :, source.clamp(0, D - 1)].permute(0, 2, 1, 3, 4)  # (N, C, d, H, W)
    offset = p[:, 2].to(work).view(N, 1, 1, 1, 1)
    slices = torch.where(inside.view(N, 1, d, 1, 1), slices + offset, 0)

    # In-plane: output pixel (i, j) reads input position (ys, xs), in voxels.
    theta = torch.deg2rad(p[:, 6])
    a = (torch.cos(theta) / p[:, 5]).view(N, 1, 1)
    b = (torch.sin(theta) / p[:, 5]).view(N, 1, 1)
    u = (torch.arange(h, dtype=torch.float64, device=vol.device) - (h - 1) / 2).view(1, h, 1)
    v = (torch.arange(w, dtype=torch.float64, device=vol.device) - (w - 1) / 2).view(1, 1, w)
    cy = (y0 + (h - 1) / 2 + p[:, 3]).view(N, 1, 1)
    cx = (x0 + (w - 1) / 2 + p[:, 4]).view(N, 1, 1)
    ys = cy + (a * u - b * v)
    xs = cx + (b * u + a * v)
    # grid_sample with align_corners=False puts voxel x at (2x + 1) / W - 1.
    grid = torch.stack([(2 * xs + 1) / W - 1, (2 * ys + 1) / H - 1], dim=-1).to(work)
    out = F.grid_sample(slices.reshape(N, C * d, H, W), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    out = torch.where(valid.view(N, 1, 1, 1), out, 0)
    return out.view(N, C, d, h, w).to(vol.dtype), flipped
