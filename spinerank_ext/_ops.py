"""Fake (meta) kernels and autograd formulas of the compiled ops.

The schemas and the CPU/CUDA kernels are registered in C++ (csrc/); what
torch.compile, torch.export and autograd need on top is registered here.
"""
from __future__ import annotations

import torch

from . import _validate

ops = torch.ops.spinerank_ext


@torch.library.register_fake("spinerank_ext::pairwise_rank_loss")
def _pairwise_rank_loss_fake(scores, grades, num_grades, scale, margin_base, margin_scale,
                             lambda_dis, lambda_sim, severity_weight, pair_fn, sigma,
                             max_pairs, hard_fraction, task_reduction, seed):
    _validate.scores_and_grades(scores, grades)
    _validate.num_grades_tuple(list(num_grades), scores.shape[1])
    _validate.loss_params(pair_fn=pair_fn, sigma=sigma, max_pairs=None if max_pairs == -1 else max_pairs,
                          hard_fraction=hard_fraction, task_reduction=task_reduction)
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


def _setup_context(ctx, inputs, output):
    _, pair_grad, counts = output
    ctx.save_for_backward(pair_grad)
    ctx.mark_non_differentiable(pair_grad, counts)


def _backward(ctx, grad_loss, _grad_pair_grad, _grad_counts):
    (pair_grad,) = ctx.saved_tensors
    grad_scores = ops.pairwise_rank_loss_backward(grad_loss, pair_grad)
    # Only scores are differentiable; one entry per op input.
    return (grad_scores,) + (None,) * 14


torch.library.register_autograd(
    "spinerank_ext::pairwise_rank_loss", _backward, setup_context=_setup_context
)
