"""Plain PyTorch pairwise_rank_loss and mined_pairs (SPEC §3).

Pairs are materialised as index lists over the batch (P = B(B-1)/2), so memory
grows with B^2.

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

from .. import _validate

__all__ = ["mined_pairs", "pairwise_rank_loss"]


def _all_pairs(B: int, device):
    """Every unordered pair i < j of a batch, in (i, j) lexicographic order."""
    i, j = torch.triu_indices(B, B, offset=1, device=device)
    return i, j


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
    _validate.values(scores, grades, ks)
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
    _validate.values(scores, grades, ks)

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
