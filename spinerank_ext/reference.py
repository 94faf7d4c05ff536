"""Plain PyTorch implementations of the spinerank_ext functions.

Written for clarity, not speed: they are the ground truth of the tests, the
baselines of the benchmarks, and the fallback when the compiled library cannot
be loaded. Pairs are materialised as index lists over the batch (P = B(B-1)/2),
so memory grows with B^2.

The TTA and augmentation references are the plain PyTorch ways of doing the
same thing: a loop of crops and flips over a padded volume, and
``torch.nn.functional.grid_sample``.

The one intended difference from the fused ops: the random part of mining here
draws with ``torch.randperm``, the fused ops with Philox keys, so the two pick
different random pairs for the same seed. Pass ``pairs=`` (e.g. the output of
:func:`spinerank_ext.mined_pairs`) to evaluate the loss on exactly the pairs the
fused op kept.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import _validate

__all__ = ["augment", "host_pairs", "host_pairs_loss", "mined_pairs", "pairwise_rank_loss", "soft_clamp",
           "tta_views"]


def _all_pairs(B: int, device):
    """Every unordered pair i < j of a batch, in (i, j) lexicographic order."""
    i, j = torch.triu_indices(B, B, offset=1, device=device)
    return i, j


def _check_values(scores, grades, num_grades):
    K = torch.tensor(num_grades, device=grades.device)
    too_large = grades >= K
    if too_large.any():
        b, t = (int(v) for v in too_large.nonzero()[0])
        raise ValueError(
            f"grade {int(grades[b, t])} at row {b}, task {t} is out of range: "
            f"task {t} has K = {num_grades[t]} grades"
        )
    bad = ~torch.isfinite(scores) & (grades >= 0)
    if bad.any():
        b, t = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"scores must be finite: got {float(scores[b, t])} at row {b}, task {t}")


def _hardness(delta, d, g, margin_base, margin_scale):
    """m - r*delta for ordinal pairs, |delta| for similar pairs (larger = harder)."""
    margin = margin_base + margin_scale * g
    return torch.where(d == 0, delta.abs(), margin - torch.sign(d) * delta)


def mined_pairs(scores, grades, num_grades, *, margin_base=0.5, margin_scale=1.5,
                max_pairs, hard_fraction=0.7, generator=None):
    """The pairs mining keeps per task, as batch rows (T, max_pairs, 2), -1 padded.

    Per task with more than ``max_pairs`` valid pairs: the floor(max_pairs *
    hard_fraction) hardest (ties: smaller i, then smaller j), then the rest drawn
    uniformly without replacement (``torch.randperm`` with ``generator``, a
    torch.Generator, an int seed or None) from the remaining pairs.
    Tasks with fewer candidates keep them all. Sorted by (i, j).
    """
    _validate.scores_and_grades(scores, grades)
    B, T = scores.shape
    ks = _validate.num_grades_tuple(num_grades, T)
    _validate.mining(max_pairs, hard_fraction)
    _validate.generator(generator)
    if max_pairs is None:
        raise ValueError("mined_pairs needs max_pairs")
    grades = _validate.grades_for_kernel(grades, ks)
    _check_values(scores, grades, ks)
    i, j = _all_pairs(B, scores.device)
    out = torch.full((T, max_pairs, 2), -1, dtype=torch.long, device=scores.device)
    k_hard = min(max_pairs, math.floor(max_pairs * hard_fraction))
    if isinstance(generator, int):
        generator = torch.Generator(scores.device).manual_seed(generator)
    for t in range(T):
        s, y = scores[:, t].detach(), grades[:, t].long()
        candidates = ((y[i] >= 0) & (y[j] >= 0)).nonzero().flatten()
        if len(candidates) > max_pairs:
            delta = s[i[candidates]] - s[j[candidates]]
            d = y[i[candidates]] - y[j[candidates]]
            h = _hardness(delta, d, d.abs() / (ks[t] - 1), margin_base, margin_scale)
            # A stable sort keeps equally hard pairs in (i, j) order.
            order = torch.sort(h, descending=True, stable=True).indices
            hard = candidates[order[:k_hard]]
            rest = candidates[order[k_hard:]]
            drawn = rest[torch.randperm(len(rest), generator=generator, device=rest.device)[: max_pairs - k_hard]]
            candidates = torch.cat([hard, drawn]).sort().values
        out[t, : len(candidates), 0] = i[candidates]
        out[t, : len(candidates), 1] = j[candidates]
    return out


def _pairs_mask(pairs, i, j, B: int, T: int):
    """(P, T) mask of the pairs listed in ``pairs`` (T, M, 2), -1 padded."""
    mask = torch.zeros(len(i), T, dtype=torch.bool, device=i.device)
    for t in range(T):
        listed = pairs[t][pairs[t, :, 0] >= 0].to(i.device)
        a, b = listed[:, 0], listed[:, 1]
        # Position of pair (a, b), a < b, in the lexicographic list of all pairs.
        position = a * B - a * (a + 1) // 2 + (b - a - 1)
        mask[position, t] = True
    return mask


def pairwise_rank_loss(scores, grades, num_grades, *, scale=10.0, margin_base=0.5,
                       margin_scale=1.5, lambda_dis=1.0, lambda_sim=0.25,
                       severity_weight=True, pair_fn="squared_hinge", sigma=1.0,
                       max_pairs=None, hard_fraction=0.7, task_reduction="mean",
                       pair_normalization="per_kind", generator=None, return_counts=False, pairs=None):
    """The SpineRank pairwise ranking loss (SPEC §3), written out plainly.

    Same arguments and result as :func:`spinerank_ext.pairwise_rank_loss`; ``pairs``
    (T, M, 2) restricts each task to the listed batch-row pairs instead of mining.
    """
    _validate.scores_and_grades(scores, grades)
    _validate.loss_params(pair_fn=pair_fn, sigma=sigma, max_pairs=max_pairs,
                          hard_fraction=hard_fraction, task_reduction=task_reduction,
                          pair_normalization=pair_normalization)
    _validate.generator(generator)
    B, T = scores.shape
    ks = _validate.num_grades_tuple(num_grades, T)
    grades = _validate.grades_for_kernel(grades, ks).long()
    _check_values(scores, grades, ks)

    i, j = _all_pairs(B, scores.device)  # (P,)
    delta = scores[i] - scores[j]  # (P, T)
    d = grades[i] - grades[j]
    keep = (grades[i] >= 0) & (grades[j] >= 0)
    if pairs is not None:
        keep = keep & _pairs_mask(pairs, i, j, B, T)
    elif max_pairs is not None:
        chosen = mined_pairs(scores, grades, ks, margin_base=margin_base, margin_scale=margin_scale,
                             max_pairs=max_pairs, hard_fraction=hard_fraction, generator=generator)
        keep = keep & _pairs_mask(chosen, i, j, B, T)

    K = torch.tensor(ks, dtype=scores.dtype, device=scores.device)
    g = d.abs().to(scores.dtype) / (K - 1)  # normalised grade gap
    r = torch.sign(d).to(scores.dtype)
    weight = scale * g if severity_weight else torch.ones_like(g)
    margin = margin_base + margin_scale * g
    if pair_fn == "squared_hinge":
        ordinal_loss = weight * torch.clamp(margin - r * delta, min=0) ** 2
    else:
        ordinal_loss = weight * F.softplus(-sigma * r * delta)
    similar_loss = delta**2

    is_ordinal = keep & (d != 0)
    is_similar = keep & (d == 0)
    n_dis = is_ordinal.sum(0)
    n_sim = is_similar.sum(0)
    sum_dis = lambda_dis * torch.where(is_ordinal, ordinal_loss, 0).sum(0)
    sum_sim = lambda_sim * torch.where(is_similar, similar_loss, 0).sum(0)
    if pair_normalization == "all":  # every kept pair in one denominator
        per_task = (sum_dis + sum_sim) / (n_dis + n_sim).clamp(min=1)
    else:
        per_task = sum_dis / n_dis.clamp(min=1) + sum_sim / n_sim.clamp(min=1)

    if task_reduction == "none":
        loss = per_task
    elif task_reduction == "sum":
        loss = per_task.sum()
    else:  # mean over the tasks that have at least one pair
        has_pairs = (n_dis + n_sim) > 0
        loss = per_task.sum() / has_pairs.sum().clamp(min=1)
    if return_counts:
        return loss, torch.stack([n_dis, n_sim], dim=1)
    return loss


def host_pairs(scores, grades, num_grades, *, margin_base=0.5, margin_scale=1.5, max_pairs=None,
               hard_fraction=0.7, generator=None):
    """Per task, the kept pairs as a list of batch-row tuples (i, j), i < j, in (i, j) order.

    The way the published SpineRankNet code selects pairs, for benchmarks: the
    task's column is copied to the host, every valid pair is listed with its
    hardness in a Python loop, and the list is sorted by hardness (stable:
    ties keep (i, j) order). The hardness is computed like the fused op's, so
    with ``hard_fraction=1`` the kept pairs are exactly the op's.
    """
    _validate.scores_and_grades(scores, grades)
    ks = _validate.num_grades_tuple(num_grades, scores.shape[1])
    _validate.mining(max_pairs, hard_fraction)
    _validate.generator(generator)
    grades = _validate.grades_for_kernel(grades, ks)
    _check_values(scores, grades, ks)
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    kept = []
    for t, K in enumerate(ks):
        s = scores[:, t].detach().cpu().double().tolist()
        y = grades[:, t].cpu().tolist()
        inv_km1 = 1.0 / (K - 1)
        pairs = []
        for i in range(len(s)):
            if y[i] < 0:
                continue
            for j in range(i + 1, len(s)):
                if y[j] < 0:
                    continue
                d, delta = y[i] - y[j], s[i] - s[j]
                if d == 0:
                    hardness = abs(delta)
                else:
                    hardness = (margin_base + margin_scale * (abs(d) * inv_km1)) - (delta if d > 0 else -delta)
                pairs.append((hardness, i, j))
        if max_pairs is not None and len(pairs) > max_pairs:
            pairs.sort(key=lambda p: -p[0])
            k_hard = min(max_pairs, math.floor(max_pairs * hard_fraction))
            rest = pairs[k_hard:]
            drawn = torch.randperm(len(rest), generator=generator)[: max_pairs - k_hard].tolist()
            pairs = sorted(pairs[:k_hard] + [rest[r] for r in drawn], key=lambda p: (p[1], p[2]))
        kept.append([(i, j) for _, i, j in pairs])
    return kept


def host_pairs_loss(scores, grades, num_grades, *, scale=10.0, margin_base=0.5, margin_scale=1.5,
                    lambda_dis=1.0, lambda_sim=0.25, severity_weight=True, pair_fn="squared_hinge",
                    sigma=1.0, max_pairs=None, hard_fraction=0.7, task_reduction="mean", generator=None):
    """The loss over :func:`host_pairs`: the pair lists are copied back to the
    scores' device, the scores gathered, and the loss of SPEC §3 computed task
    by task. For benchmarks: this is the baseline the fused op replaces."""
    _validate.loss_params(pair_fn=pair_fn, sigma=sigma, max_pairs=max_pairs,
                          hard_fraction=hard_fraction, task_reduction=task_reduction)
    ks = _validate.num_grades_tuple(num_grades, scores.shape[1])
    kept = host_pairs(scores, grades, ks, margin_base=margin_base, margin_scale=margin_scale,
                      max_pairs=max_pairs, hard_fraction=hard_fraction, generator=generator)
    per_task, has_pairs = [], []
    for t, (K, pairs) in enumerate(zip(ks, kept)):
        index = torch.tensor(pairs, dtype=torch.long, device=scores.device).reshape(-1, 2)
        delta = scores[index[:, 0], t] - scores[index[:, 1], t]
        d = grades[index[:, 0], t].long() - grades[index[:, 1], t].long()
        g = d.abs().to(scores.dtype) / (K - 1)
        weight = scale * g if severity_weight else torch.ones_like(g)
        rdelta = torch.sign(d).to(scores.dtype) * delta
        if pair_fn == "squared_hinge":
            ordinal = weight * torch.clamp(margin_base + margin_scale * g - rdelta, min=0) ** 2
        else:
            ordinal = weight * F.softplus(-sigma * rdelta)
        is_similar = d == 0
        n_sim = int(is_similar.sum())
        n_dis = len(pairs) - n_sim
        per_task.append(lambda_dis * torch.where(is_similar, 0, ordinal).sum() / max(1, n_dis)
                        + lambda_sim * torch.where(is_similar, delta**2, 0).sum() / max(1, n_sim))
        has_pairs.append(len(pairs) > 0)
    per_task = torch.stack(per_task) if per_task else scores.new_zeros(0)
    if task_reduction == "none":
        return per_task
    if task_reduction == "sum":
        return per_task.sum()
    return per_task.sum() / max(1, sum(has_pairs))


def soft_clamp(h, scale=10.0, beta=5.0):
    """S * sp(beta*h) / (sp(beta*h) + sp(beta*(S - h))), differentiated by autograd."""
    lo = F.softplus(beta * h)
    hi = F.softplus(beta * (scale - h))
    return scale * lo / (lo + hi)


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
