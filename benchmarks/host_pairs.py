"""The published approach to pair selection, the benchmarks' host-side baseline.

Not a reference of an op: :func:`host_pairs` builds each task's pair list on
the host in a Python loop, as the published SpineRankNet code does, and
:func:`host_pairs_loss` evaluates the loss over those lists. The fused op
replaces both (benchmarks/test_bench_pairwise_rank_loss.py times them against
it; benchmarks/test_host_pairs.py checks them against it).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from spinerank_ext import _validate

__all__ = ["host_pairs", "host_pairs_loss"]


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
    _validate.values(scores, grades, ks)
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
