"""Fused pairwise ranking loss against the plain reference, eager and compiled.

    pytest benchmarks --benchmark-json=benchmarks/results/cpu-pairwise_rank_loss.json
    python benchmarks/render_table.py benchmarks/results/cpu-pairwise_rank_loss.json

Each case times one training step of the loss: forward and backward, T = 11
tasks of the default task table, float32, 20% missing grades; all pairs, or
mined (max_pairs = 4 B per task, hard_fraction = 0.7).
"""
import pytest
import torch

import spinerank_ext as se
from spinerank_ext import reference

TASK_KS = (5, 4, 4, 3, 4, 4, 4, 4, 4, 4, 4)
SIZES = (32, 128, 512)

_compiled_reference = torch.compile(reference.pairwise_rank_loss, dynamic=False)
IMPLS = {
    "fused": se.pairwise_rank_loss,
    "reference": reference.pairwise_rank_loss,
    "reference_compiled": _compiled_reference,
}


def batch(B, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = (torch.rand(B, len(TASK_KS), generator=g) * 10).requires_grad_()
    grades = torch.stack([torch.randint(0, k, (B,), generator=g) for k in TASK_KS], dim=1)
    grades[torch.rand(B, len(TASK_KS), generator=g) < 0.2] = -1
    return scores, grades


@pytest.mark.parametrize("B", SIZES, ids=[f"B{b}" for b in SIZES])
@pytest.mark.parametrize("impl", list(IMPLS))
def test_loss_fwd_bwd(benchmark, impl, B):
    scores, grades = batch(B)
    fn = IMPLS[impl]

    def step():
        scores.grad = None
        fn(scores, grades, TASK_KS).backward()

    for _ in range(3):  # compile (reference_compiled) and warm caches outside the timing
        step()
    benchmark.group = f"pairwise_rank_loss fwd+bwd, B={B}, T=11, float32"
    benchmark.extra_info.update(impl=impl, B=B, T=len(TASK_KS), pairs="all")
    benchmark(step)
    # The result is right, not just fast.
    expected = batch(B)[0].detach().requires_grad_()
    reference.pairwise_rank_loss(expected, grades, TASK_KS).backward()
    torch.testing.assert_close(scores.grad, expected.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("B", SIZES, ids=[f"B{b}" for b in SIZES])
@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_loss_mined_fwd_bwd(benchmark, impl, B):
    # The compiled reference is left out: its mining has data-dependent shapes.
    scores, grades = batch(B)
    fn = IMPLS[impl]
    max_pairs = 4 * B

    def step():
        scores.grad = None
        fn(scores, grades, TASK_KS, max_pairs=max_pairs, hard_fraction=0.7, generator=0).backward()

    for _ in range(3):
        step()
    benchmark.group = f"pairwise_rank_loss mined fwd+bwd, B={B}, max_pairs={max_pairs}"
    benchmark.extra_info.update(impl=impl, B=B, T=len(TASK_KS), pairs=f"mined {max_pairs}")
    benchmark(step)
    assert torch.isfinite(scores.grad).all()
