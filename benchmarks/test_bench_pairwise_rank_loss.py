"""Fused pairwise ranking loss against its baselines, time and peak extra memory.

    pytest benchmarks/test_bench_pairwise_rank_loss.py --benchmark-json=benchmarks/results/cpu-pairwise_rank_loss.json
    python benchmarks/render_table.py benchmarks/results/cpu-pairwise_rank_loss.json

Each case times one training step of the loss: forward and backward, T = 11
tasks of the default task table, float32, 20% missing grades; all pairs, or
mined (max_pairs = 4 B, or 500, per task; hard_fraction = 0.7). Baselines:
``reference`` (spinerank_ext.reference, eager), ``reference_compiled`` (the same
under torch.compile; all pairs only, its mining has data-dependent shapes) and
``host_pairs`` (host_pairs.host_pairs_loss: per task, the pair list built on the
host in a Python loop, the published approach). Cases run on CPU, and on CUDA
too when a GPU is present. Peak extra memory: see benchmarks/memory.py.
"""
import pathlib

import pytest
import torch

import spinerank_ext as se
from spinerank_ext import reference

from host_pairs import host_pairs_loss
from memory import cuda_peak_extra_bytes, measure_case

TASK_KS = (5, 4, 4, 3, 4, 4, 4, 4, 4, 4, 4)
#: The floor of a call: an empty autograd round trip on the same (B, T) scores.
from render_table import FLOOR as EMPTY_AUTOGRAD  # noqa: E402
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

_compiled_reference = torch.compile(reference.pairwise_rank_loss, dynamic=False)


def empty_autograd(scores, grades, num_grades, **kw):
    """Not a loss: the floor any autograd op pays, ``scores.sum()`` and its backward."""
    return scores.sum()


IMPLS = {
    "fused": se.pairwise_rank_loss,
    "reference": reference.pairwise_rank_loss,
    "reference_compiled": _compiled_reference,
    "host_pairs": host_pairs_loss,
    EMPTY_AUTOGRAD: empty_autograd,
}
# (impl, B) per kind of case. The eager reference needs 4.9 GB and ~25 s for
# one step at B = 4096 (one round only) and cannot run at B = 65536: its pair
# index lists alone would take 34 GB. host_pairs loops over B^2 / 2 pairs per
# task in Python. At the paper's B = 32 the call's fixed cost dominates: the
# empty autograd round trip measures the floor in the same run.
ALL_PAIRS = [("fused", B) for B in (32, 128, 512, 4096, 65536)] + [(EMPTY_AUTOGRAD, 32)] + [
    ("reference", B) for B in (32, 128, 512, 4096)] + [
    ("reference_compiled", B) for B in (32, 128, 512)] + [("host_pairs", B) for B in (32, 128)]
MINED = [(impl, B, 4 * B) for impl in ("fused", "reference") for B in (32, 128, 512)] + [
    ("fused", 4096, 4 * 4096), ("host_pairs", 32, 128), ("host_pairs", 128, 512)] + [
    (impl, 128, 500) for impl in ("fused", "reference", "host_pairs")] + [
    ("fused", B, max_pairs) for B in (4096, 65536) for max_pairs in (500, 100_000)]
# Too slow for repeated rounds (and for the untimed smoke run): one round each.
SINGLE_ROUND = {("reference", 4096, None), ("fused", 65536, 500), ("fused", 65536, 100_000)}


def large(cases):
    """Cases of B >= 4096 run only with --bench-large (make bench): pytest.param with the ``large`` mark."""
    return [pytest.param(*case, marks=pytest.mark.large) if case[1] >= 4096 else case for case in cases]


def batch(B, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(B, len(TASK_KS), generator=g) * 10
    grades = torch.stack([torch.randint(0, k, (B,), generator=g) for k in TASK_KS], dim=1)
    grades[torch.rand(B, len(TASK_KS), generator=g) < 0.2] = -1
    return scores.to(device).requires_grad_(), grades.to(device)


def make_step(impl, B, device="cpu", max_pairs=None):
    """One forward + backward of the case; also what benchmarks/memory.py measures."""
    scores, grades = batch(B, device=device)
    fn = IMPLS[impl]
    kw = {} if max_pairs is None else dict(max_pairs=max_pairs, hard_fraction=0.7, generator=0)

    def step():
        scores.grad = None
        fn(scores, grades, TASK_KS, **kw).backward()
        if device == "cuda":
            torch.cuda.synchronize()

    step.scores, step.grades = scores, grades
    return step


def run_case(benchmark, request, impl, B, device, max_pairs=None):
    smoke = request.config.getoption("benchmark_disable")
    if smoke and (impl, B, max_pairs) in SINGLE_ROUND:
        pytest.skip("too slow for the untimed smoke run")
    step = make_step(impl, B, device, max_pairs)
    for _ in range(1 if B > 512 else 3):  # compile (reference_compiled) and warm caches outside the timing
        step()
    benchmark.extra_info.update(impl=impl, B=B, T=len(TASK_KS), device=device,
                                pairs="all" if max_pairs is None else f"mined {max_pairs}")
    if (impl, B, max_pairs) in SINGLE_ROUND:
        benchmark.pedantic(step, rounds=1, iterations=1)
    else:
        benchmark(step)
    # Memory (a fresh process per case): every case with --bench-large (make bench); otherwise one small
    # case, to keep the measurement itself tested.
    if device == "cuda":
        benchmark.extra_info["peak_extra_bytes"] = cuda_peak_extra_bytes(step)[0]
    elif (request.config.getoption("--bench-large") and not smoke) or (impl == "fused" and B == 32):
        benchmark.extra_info["peak_extra_bytes"] = measure_case(
            pathlib.Path(__file__), "make_step", impl=impl, B=B, device=device, max_pairs=max_pairs)
    return step


def expected_grad(scores, grades, B):
    """float64 gradient from the reference, or at large B from the fused op's direct pair loop."""
    x = scores.detach().double().requires_grad_()
    if B <= 512:
        reference.pairwise_rank_loss(x, grades, TASK_KS).backward()
    else:
        before = torch.ops.spinerank_ext._sorted_pairs_min_n(2**62)
        try:
            se.pairwise_rank_loss(x, grades, TASK_KS).backward()
        finally:
            torch.ops.spinerank_ext._sorted_pairs_min_n(before)
    return x.grad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl,B", large(ALL_PAIRS), ids=[f"{i}-B{b}" for i, b in ALL_PAIRS])
def test_loss_fwd_bwd(benchmark, request, impl, B, device):
    benchmark.group = f"pairwise_rank_loss fwd+bwd, B={B}, T=11, float32, {device}"
    step = run_case(benchmark, request, impl, B, device)
    # The result is right, not just fast.
    if impl == EMPTY_AUTOGRAD:
        assert torch.equal(step.scores.grad, torch.ones_like(step.scores))
    elif B <= 4096 and device == "cpu":
        grad = expected_grad(step.scores, step.grades, B)
        torch.testing.assert_close(step.scores.grad.double(), grad, rtol=1e-4, atol=1e-5)
    assert torch.isfinite(step.scores.grad).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl,B,max_pairs", large(MINED), ids=[f"{i}-B{b}-max{m}" for i, b, m in MINED])
def test_loss_mined_fwd_bwd(benchmark, request, impl, B, max_pairs, device):
    benchmark.group = f"pairwise_rank_loss mined fwd+bwd, B={B}, max_pairs={max_pairs}, {device}"
    step = run_case(benchmark, request, impl, B, device, max_pairs)
    assert torch.isfinite(step.scores.grad).all()
