"""Plain PyTorch tta_views (SPEC §4): a loop of crops and flips over a padded volume."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _validate

__all__ = ["tta_views"]


def tta_views(vol, out_size, flips=(False, True), shifts_h=(-16, 0, 16), shifts_w=(-16, 0, 16),
              shifts_d=(-1, 0, 1), fill=0.0):
    """The TTA views of SPEC §4 as a loop of crops and flips: (N, V, C, d, h, w).
    Forward only, like the op: the result never requires grad."""
    _validate.volume(vol)
    d, h, w = _validate.out_size(out_size)
    flips, shifts_h, shifts_w, shifts_d = _validate.tta_grid(flips, shifts_h, shifts_w, shifts_d)
    vol = vol.detach()
    D, H, W = vol.shape[2:]
    z0, y0, x0 = (D - d) // 2, (H - h) // 2, (W - w) // 2
    # Pad with `fill` until every view's window lies inside the padded volume.
    pad = []
    for start, size, length, shifts in ((x0, w, W, shifts_w), (y0, h, H, shifts_h), (z0, d, D, shifts_d)):
        pad += [max(0, -(start + min(shifts))), max(0, start + size + max(shifts) - length)]
    padded = F.pad(vol, pad, value=fill) if any(pad) else vol
    pz, py, px = pad[4], pad[2], pad[0]
    views = []
    for flip in flips:
        for dy in shifts_h:
            for dx in shifts_w:
                for dz in shifts_d:
                    z, y, x = z0 + dz + pz, y0 + dy + py, x0 + dx + px
                    crop = padded[:, :, z:z + d, y:y + h, x:x + w]
                    views.append(crop.flip(2) if flip else crop)
    return torch.stack(views, dim=1)
