"""Fake (meta) kernels of the compiled ops.

The schemas, the CPU/CUDA kernels and the autograd formula are registered in
C++ (csrc/); what torch.compile and torch.export need on top is registered here.
Autograd is in C++ (csrc/autograd.cpp) rather than torch.library.register_autograd
because that Python wrapper costs more than the fused kernel at small B.
"""
from __future__ import annotations

import torch

from . import _validate


@torch.library.register_fake("spinerank_ext::pairwise_rank_loss")
def _pairwise_rank_loss_fake(scores, grades, num_grades, scale, margin_base, margin_scale,
                             lambda_dis, lambda_sim, severity_weight, pair_fn, sigma,
                             max_pairs, hard_fraction, task_reduction, seed, pair_normalization="per_kind"):
    _validate.scores_and_grades(scores, grades)
    _validate.num_grades_tuple(list(num_grades), scores.shape[1])
    _validate.loss_params(pair_fn=pair_fn, sigma=sigma, max_pairs=None if max_pairs == -1 else max_pairs,
                          hard_fraction=hard_fraction, task_reduction=task_reduction,
                          pair_normalization=pair_normalization)
    B, T = scores.shape
    loss = scores.new_empty((T,) if task_reduction == "none" else ())
    return loss, scores.new_empty((B, T)), scores.new_empty((T, 2), dtype=torch.long)


@torch.library.register_fake("spinerank_ext::pairwise_rank_loss_backward")
def _pairwise_rank_loss_backward_fake(grad_loss, pair_grad):
    return torch.empty_like(pair_grad)


@torch.library.register_fake("spinerank_ext::mined_pairs")
def _mined_pairs_fake(scores, grades, num_grades, margin_base, margin_scale, max_pairs,
                      hard_fraction, seed):
    _validate.scores_and_grades(scores, grades)
    _validate.num_grades_tuple(list(num_grades), scores.shape[1])
    _validate.mining(max_pairs, hard_fraction)
    return scores.new_empty((scores.shape[1], max_pairs, 2), dtype=torch.long)


@torch.library.register_fake("spinerank_ext::tta_views")
def _tta_views_fake(vol, out_size, flips, shifts_h, shifts_w, shifts_d, fill):
    _validate.volume(vol)
    d, h, w = _validate.out_size(list(out_size))
    flips, shifts_h, shifts_w, shifts_d = _validate.tta_grid(list(flips), list(shifts_h), list(shifts_w),
                                                             list(shifts_d))
    V = len(flips) * len(shifts_h) * len(shifts_w) * len(shifts_d)
    return vol.new_empty((vol.shape[0], V, vol.shape[1], d, h, w))


@torch.library.register_fake("spinerank_ext::augment")
def _augment_fake(vol, params, out_size):
    _validate.volume(vol)
    d, h, w = _validate.out_size(list(out_size))
    _validate.augment_params(vol, params)
    N, C = vol.shape[:2]
    return vol.new_empty((N, C, d, h, w)), vol.new_empty((N,), dtype=torch.bool)


@torch.library.register_fake("spinerank_ext::_sorted_hinge_generic")
def _sorted_hinge_generic_fake(scores, grades, num_grades, scale, margin_base, margin_scale, lambda_dis,
                               lambda_sim, severity_weight, task_reduction, pair_normalization="per_kind"):
    # The CUDA sorted path run on the CPU, for tests (csrc/loss/sorted_pairs_generic.h).
    _validate.scores_and_grades(scores, grades)
    _validate.num_grades_tuple(list(num_grades), scores.shape[1])
    B, T = scores.shape
    loss = scores.new_empty((T,) if task_reduction == "none" else ())
    return loss, scores.new_empty((B, T)), scores.new_empty((T, 2), dtype=torch.long)
