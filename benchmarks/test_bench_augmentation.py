"""Fused test-time and training augmentation against plain PyTorch, on CPU.

    pytest benchmarks/test_bench_augmentation.py --benchmark-json=benchmarks/results/cpu-augmentation.json
    python benchmarks/render_table.py benchmarks/results/cpu-augmentation.json

tta_views: the 54 default views of (4, 1, 15, 192, 320) float32 volumes cropped
to (12, 128, 256), against ``reference.tta_views``, a loop of crops and flips
stacked into one tensor. augment: random SPEC §5 parameters for
(32, 1, 15, 192, 320) float32 volumes to (12, 128, 256), against
``reference.augment``, slice indexing plus one bilinear ``grid_sample``.
Peak extra memory of one call: see benchmarks/memory.py (timed run only).
"""
import pathlib

import pytest
import torch

import spinerank_ext as se
from spinerank_ext import reference

from memory import measure_case

OUT_SIZE = (12, 128, 256)
TTA_SHAPE = (4, 1, 15, 192, 320)
AUGMENT_SHAPE = (32, 1, 15, 192, 320)

TTA_IMPLS = {"fused": se.tta_views, "reference": reference.tta_views}
AUGMENT_IMPLS = {"fused": se.augment, "reference": reference.augment}


def volume(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def make_step(op, impl):
    """One call of the case, for the memory measurement."""
    if op == "tta_views":
        vol = volume(TTA_SHAPE)
        return lambda: TTA_IMPLS[impl](vol, OUT_SIZE)
    vol = volume(AUGMENT_SHAPE)
    params = se.sample_augment_params(AUGMENT_SHAPE[0], torch.Generator().manual_seed(0))
    return lambda: AUGMENT_IMPLS[impl](vol, params, OUT_SIZE)


def record_memory(benchmark, request, op, impl):
    # A fresh process per case: with --bench-large (make bench), whose results the README renders.
    if request.config.getoption("--bench-large") and not request.config.getoption("benchmark_disable"):
        benchmark.extra_info["peak_extra_bytes"] = measure_case(pathlib.Path(__file__), "make_step", op=op, impl=impl)


@pytest.mark.parametrize("impl", list(TTA_IMPLS))
def test_tta_views(benchmark, request, impl):
    vol = volume(TTA_SHAPE)
    fn = TTA_IMPLS[impl]
    fn(vol, OUT_SIZE)  # warm-up outside the timing
    benchmark.group = f"tta_views {TTA_SHAPE} -> {OUT_SIZE}, 54 views, float32"
    benchmark.extra_info.update(op="tta_views", impl=impl, shape=list(TTA_SHAPE), out_size=list(OUT_SIZE),
                                views=54)
    out = benchmark(fn, vol, OUT_SIZE)
    record_memory(benchmark, request, "tta_views", impl)
    # The result is right, not just fast: view 13 is the centre crop.
    assert out.shape == (4, 54, 1, *OUT_SIZE)
    assert torch.equal(out[:, 13], vol[:, :, 1:13, 32:160, 32:288])


@pytest.mark.parametrize("impl", list(AUGMENT_IMPLS))
def test_augment(benchmark, request, impl):
    vol = volume(AUGMENT_SHAPE)
    params = se.sample_augment_params(AUGMENT_SHAPE[0], torch.Generator().manual_seed(0))
    fn = AUGMENT_IMPLS[impl]
    fn(vol, params, OUT_SIZE)
    benchmark.group = f"augment {AUGMENT_SHAPE} -> {OUT_SIZE}, float32"
    benchmark.extra_info.update(op="augment", impl=impl, shape=list(AUGMENT_SHAPE), out_size=list(OUT_SIZE))
    out, flipped = benchmark(fn, vol, params, OUT_SIZE)
    record_memory(benchmark, request, "augment", impl)
    expected, expected_flipped = reference.augment(vol.double(), params, OUT_SIZE)
    # The float32 reference's grid coordinates are off by up to ~1e-5 voxels.
    atol = 1e-5 if impl == "fused" else 1e-3
    torch.testing.assert_close(out, expected.float(), rtol=0, atol=atol)
    assert torch.equal(flipped, expected_flipped)
