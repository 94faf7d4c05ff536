"""The host-pairs baseline of the benchmarks (host_pairs.py) against the fused op.

Run with the benchmarks (``pytest benchmarks``, CI's ``make bench-smoke``).
"""
import pytest
import torch

import spinerank_ext as se

from host_pairs import host_pairs, host_pairs_loss

#: The default task table of SPEC §2 (tests/conftest.py).
TASK_KS = (5, 4, 4, 3, 4, 4, 4, 4, 4, 4, 4)


def make_batch(B, ks, *, seed=0, dtype=torch.float64, missing=0.2, ties=True, device="cpu"):
    """Random scores and grades with missing grades and tied scores: the tests' make_batch (tests/conftest.py)."""
    g = torch.Generator().manual_seed(seed)
    T = len(ks)
    scores = torch.rand(B, T, generator=g, dtype=torch.float64) * 10
    if ties:
        scores = torch.round(scores * 2) / 2
    grades = torch.stack([torch.randint(0, k, (B,), generator=g) for k in ks], dim=1)
    grades[torch.rand(B, T, generator=g) < missing] = -1
    return scores.to(dtype).to(device), grades.to(device)


@pytest.mark.parametrize("kw", [dict(), dict(task_reduction="none", severity_weight=False),
                                dict(task_reduction="sum", pair_fn="logistic", sigma=0.7),
                                dict(lambda_dis=0.3, lambda_sim=2.0, margin_base=0.1, margin_scale=3.0)])
def test_loss_and_gradient_match_the_op(kw):
    scores, grades = make_batch(23, TASK_KS, seed=1, missing=0.3)
    grades[:, 2] = -1  # a task without pairs
    x, xr = scores.clone().requires_grad_(), scores.clone().requires_grad_()
    loss = se.pairwise_rank_loss(x, grades, TASK_KS, **kw)
    loss_h = host_pairs_loss(xr, grades, TASK_KS, **kw)
    loss.sum().backward()
    loss_h.sum().backward()
    torch.testing.assert_close(loss_h, loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(xr.grad, x.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("max_pairs", [1, 20, 90])
def test_hard_pairs_are_the_ops(max_pairs):
    # Scores on a 0.5 grid: many pairs are equally hard, so the tie rule decides.
    scores, grades = make_batch(25, TASK_KS, seed=max_pairs)
    kept = host_pairs(scores, grades, TASK_KS, max_pairs=max_pairs, hard_fraction=1.0)
    fused = se.mined_pairs(scores, grades, TASK_KS, max_pairs=max_pairs, hard_fraction=1.0)
    for t in range(len(TASK_KS)):
        assert kept[t] == [tuple(p) for p in fused[t].tolist() if p[0] >= 0]
    loss = se.pairwise_rank_loss(scores, grades, TASK_KS, max_pairs=max_pairs, hard_fraction=1.0)
    loss_h = host_pairs_loss(scores, grades, TASK_KS, max_pairs=max_pairs, hard_fraction=1.0)
    torch.testing.assert_close(loss_h, loss, rtol=1e-12, atol=1e-12)


def test_random_part_keeps_max_pairs_distinct_pairs():
    scores, grades = make_batch(30, (4, 3), seed=2, missing=0.0)
    kept = host_pairs(scores, grades, (4, 3), max_pairs=50, hard_fraction=0.5, generator=3)
    hard = host_pairs(scores, grades, (4, 3), max_pairs=25, hard_fraction=1.0)
    for t in range(2):
        assert len(set(kept[t])) == 50 and kept[t] == sorted(kept[t])
        assert set(hard[t]) <= set(kept[t])
        assert all(0 <= i < j < 30 for i, j in kept[t])


def test_bad_input_is_rejected():
    scores, grades = make_batch(5, (3,), seed=0)
    grades[2, 0] = 3
    with pytest.raises(ValueError, match="grade 3 at row 2, task 0 is out of range"):
        host_pairs_loss(scores, grades, 3)
    with pytest.raises(ValueError, match="max_pairs must be None"):
        host_pairs_loss(scores, grades.clamp(max=2), 3, max_pairs=0)
