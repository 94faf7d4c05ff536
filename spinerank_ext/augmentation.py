"""Training augmentation (SPEC §5): random per-sample parameters and one fused op.

    params = sample_augment_params(len(vol), generator)      # (N, 7)
    out, flipped = augment(vol, params, (12, 128, 256))
    # swap the left/right labels of the samples in `flipped`

The parameters are a plain (N, 7) tensor so that they can be logged, replayed
and tested; the columns, in order, are AUGMENT_PARAM_NAMES:

=========  ===========================================================  =============
column     meaning                                                      default draw
=========  ===========================================================  =============
dz         slice shift (rounded half up); vacated slices are zero       U{-2..2}
flip       left-right flip of the slice axis when >= 0.5                p = 0.5
intensity  offset added to the volume (not to the zero outside it)      U(-0.1, 0.1)
dy, dx     in-plane translation of the crop, in voxels                  U{-24..24}, U{-32..32}
scale      isotropic in-plane zoom about the crop centre (> 1 enlarges) U(0.9, 1.1)
rotation   in-plane rotation about the crop centre, degrees             U(-15, 15)
=========  ===========================================================  =============
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from . import _library, _validate, reference

__all__ = ["AUGMENT_PARAM_NAMES", "augment", "sample_augment_params"]

AUGMENT_PARAM_NAMES = ("dz", "flip", "intensity", "dy", "dx", "scale", "rotation")


def _magnitude(name: str, value, integer: bool):
    kinds = (int,) if integer else (int, float)
    if not isinstance(value, kinds) or isinstance(value, bool) or not value >= 0:
        kind = "an int" if integer else "a number"
        raise ValueError(f"{name} must be {kind} >= 0, got {value!r}")
    return value


def sample_augment_params(n: int, generator: torch.Generator | None = None, *,
                          slice_shift: int = 2, flip: float = 0.5, intensity: float = 0.1,
                          shift_h: int = 24, shift_w: int = 32, scale=(0.9, 1.1),
                          rotate_deg: float = 15.0, dtype=torch.float32) -> torch.Tensor:
    """Random augmentation parameters (n, 7) for :func:`augment`; SPEC §5 defaults.

    Per sample: dz ~ U{-slice_shift..slice_shift}, a flip with probability
    ``flip``, intensity ~ U(-intensity, intensity), dy ~ U{-shift_h..shift_h},
    dx ~ U{-shift_w..shift_w}, scale ~ U(scale[0], scale[1]) and rotation ~
    U(-rotate_deg, rotate_deg) degrees. One ``torch.rand`` draw from
    ``generator`` (None: torch's default generator) on the generator's device,
    so the same generator state gives the same parameters.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    dz, dy, dx = (_magnitude(name, v, True) for name, v in
                  (("slice_shift", slice_shift), ("shift_h", shift_h), ("shift_w", shift_w)))
    intensity = _magnitude("intensity", intensity, False)
    rotate_deg = _magnitude("rotate_deg", rotate_deg, False)
    if isinstance(flip, bool) or not isinstance(flip, (int, float)) or not 0 <= flip <= 1:
        raise ValueError(f"flip must be a probability in [0, 1], got {flip!r}")
    if (not isinstance(scale, Sequence) or len(scale) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scale)
            or not 0 < scale[0] <= scale[1]):
        raise ValueError(f"scale must be a (low, high) pair with 0 < low <= high, got {scale!r}")

    device = generator.device if generator is not None else None
    u = torch.rand((n, len(AUGMENT_PARAM_NAMES)), generator=generator, dtype=torch.float64, device=device)

    def integer(col, m):  # U{-m..m}
        return (torch.floor(u[:, col] * (2 * m + 1)) - m).clamp(max=m)

    def uniform(col, lo, hi):
        return lo + u[:, col] * (hi - lo)

    columns = [
        integer(0, dz),
        (u[:, 1] < flip).to(torch.float64),
        uniform(2, -intensity, intensity),
        integer(3, dy),
        integer(4, dx),
        uniform(5, *scale),
        uniform(6, -rotate_deg, rotate_deg),
    ]
    return torch.stack(columns, dim=1).to(dtype)


def augment(vol: torch.Tensor, params: torch.Tensor, out_size: Sequence[int]):
    """Augments every sample of a batch with its own parameters, in one pass.

    Args:
        vol: (N, C, D, H, W) floating volumes (D = sagittal slices).
        params: (N, 7) floating, columns as in AUGMENT_PARAM_NAMES (see the
            module docstring), e.g. from :func:`sample_augment_params`.
        out_size: (d, h, w), cropped around the volume's centre as in
            :func:`spinerank_ext.tta_views`.

    Returns:
        ``(out, flipped)``: out (N, C, d, h, w) of vol's dtype and flipped (N,)
        bool, the samples whose left/right labels the caller must swap.
        Output voxel (k, i, j) of sample n is the bilinear interpolation (zero
        outside the volume) of vol[n, :, z] + intensity at in-plane position
        y = cy + a·u - b·v, x = cx + b·u + a·v, where z = z0 + (flip ? d-1-k : k)
        + dz, u = i - (h-1)/2, v = j - (w-1)/2, a = cos(rotation)/scale,
        b = sin(rotation)/scale, cy = y0 + (h-1)/2 + dy, cx = x0 + (w-1)/2 + dx.
        A positive rotation turns the image clockwise as displayed (rows
        down); scale > 1 enlarges it.
        Identity parameters (0, 0, 0, 0, 0, 1, 0) give the centre crop exactly,
        and so do integer shifts and flips.

        Non-finite parameters: a sample with any of its 7 parameters NaN, +inf
        or -inf, or with scale = 0 (1/scale not finite), gives all zeros and
        flipped False; the other samples are computed as usual. (Finite
        parameters are used as given: e.g. a shift that moves the crop off the
        volume gives zeros too, an intensity that overflows the dtype gives inf.)

        Forward only: neither output requires grad, even when ``vol`` or
        ``params`` does (the op, its reference fallback and a direct
        ``torch.ops.spinerank_ext.augment`` call alike).
    """
    _validate.volume(vol)
    size = _validate.out_size(out_size)
    _validate.augment_params(vol, params)
    vol, params = vol.detach(), params.detach()
    if _library.fused_for(vol):
        return torch.ops.spinerank_ext.augment(vol, params, size)
    return reference.augment(vol, params, size)
