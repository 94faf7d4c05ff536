"""CUDA benchmark of the pairwise ranking loss: fused vs the eager and the compiled reference.

    python benchmarks/bench_cuda.py                 # writes benchmarks/results/cuda-pairwise_rank_loss.json
    python benchmarks/render_table.py benchmarks/results/cuda-pairwise_rank_loss.json

Each case times one training step of the loss (forward and backward), T = 11
tasks of the default task table, float32, 20% missing grades; all pairs, or
mined (max_pairs = 4 B per task, hard_fraction = 0.7). On CUDA, all pairs
also with each path forced (``fused_direct``: the pair kernel, ``fused_sorted``:
the sorted path, see torch.ops.spinerank_ext._cuda_sorted_min_batch), which
measures where the op should switch, and the fused op alone at B = 16384 and
65536, where the references cannot run. Timing: CUDA events
around each step after a warm-up, median of the repeats. A baseline that runs
out of memory is recorded as such. Every fused result is first checked against
the reference where the reference fits.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != ROOT]
os.environ.setdefault("SPINERANK_EXT_REQUIRE_COMPILED", "1")
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ROOT / ".torchinductor"))

import spinerank_ext as se  # noqa: E402
from spinerank_ext import reference  # noqa: E402

TASK_KS = (5, 4, 4, 3, 4, 4, 4, 4, 4, 4, 4)
SIZES = (32, 512, 4096, 8192)
LARGE_SIZES = (16384, 65536)  # fused only, both paths


def batch(B, seed=0, device="cuda"):
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(B, len(TASK_KS), generator=g) * 10
    grades = torch.stack([torch.randint(0, k, (B,), generator=g) for k in TASK_KS], dim=1)
    grades[torch.rand(B, len(TASK_KS), generator=g) < 0.2] = -1
    return scores.to(device).requires_grad_(), grades.to(device)


def median_seconds(step, warmup, repeats, device="cuda"):
    """CUDA events around each step on a GPU (the CPU clock elsewhere: tests)."""
    for _ in range(warmup):
        step()
    times = []
    if device != "cuda":
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        return statistics.median(times)
    torch.cuda.synchronize()
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def forced(path):
    """The fused loss with the CUDA op's all-pairs path forced ("direct" or "sorted")."""
    def loss(*args, **kwargs):
        before = torch.ops.spinerank_ext._cuda_sorted_min_batch(0 if path == "sorted" else 2**62)
        try:
            return se.pairwise_rank_loss(*args, **kwargs)
        finally:
            torch.ops.spinerank_ext._cuda_sorted_min_batch(before)
    return loss


def cases(sizes, device="cuda", large_sizes=()):
    compiled = torch.compile(reference.pairwise_rank_loss, dynamic=False)
    impls = {"fused": se.pairwise_rank_loss, "reference": reference.pairwise_rank_loss,
             "reference_compiled": compiled}
    paths = {"fused_direct": forced("direct"), "fused_sorted": forced("sorted")} if device == "cuda" else {}
    for B in sizes:
        for impl, fn in {**impls, **paths}.items():
            yield B, "all", impl, fn, {}
        for impl in ("fused", "reference"):  # compiled mining: data-dependent shapes
            yield B, f"mined {4 * B}", impl, impls[impl], dict(max_pairs=4 * B, hard_fraction=0.7, generator=0)
    for B in large_sizes:
        for impl, fn in {"fused": se.pairwise_rank_loss, **paths}.items():
            yield B, "all", impl, fn, {}


def check(B, kwargs, device="cuda", fused=se.pairwise_rank_loss):
    """The fused gradient against the reference's on the same pairs."""
    scores, grades = batch(B, seed=1, device=device)
    pairs = se.mined_pairs(scores, grades, TASK_KS, **kwargs) if kwargs else None
    expected = scores.detach().double().requires_grad_()
    reference.pairwise_rank_loss(expected, grades, TASK_KS, pairs=pairs).backward()
    fused(scores, grades, TASK_KS, **kwargs).backward()
    torch.testing.assert_close(scores.grad.double(), expected.grad, rtol=1e-4, atol=1e-5)


def run(sizes=SIZES, warmup=10, repeats=50, device="cuda", large_sizes=()):
    cuda = device == "cuda"
    results = []
    for B, pairs, impl, fn, kwargs in cases(sizes, device, large_sizes):
        if impl.startswith("fused") and B <= 512:
            check(B, kwargs, device, fn)
        scores, grades = batch(B, device=device)

        def step():
            scores.grad = None
            fn(scores, grades, TASK_KS, **kwargs).backward()

        if cuda:
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if cuda else 0
        try:
            median = median_seconds(step, warmup, repeats, device)
            peak = torch.cuda.max_memory_allocated() - base if cuda else None
        except torch.OutOfMemoryError:
            median, peak = None, None
            torch.cuda.empty_cache()
        results.append({"extra_info": {"impl": impl, "B": B, "T": len(TASK_KS), "pairs": pairs,
                                       "peak_extra_bytes": peak},
                        "stats": {"median": median}})
        shown = "out of memory" if median is None else f"{median * 1e3:.3f} ms"
        print(f"B={B:5d} {pairs:12s} {impl:19s} {shown}", flush=True)
    return results


def machine_info():
    props = torch.cuda.get_device_properties(0)
    return {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda, "torch": torch.__version__,
            "python_version": platform.python_version(), "timing": "CUDA events, median"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/cuda-pairwise_rank_loss.json"))
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_cuda.py needs a CUDA GPU")
    data = {"machine_info": machine_info(), "datetime": datetime.datetime.now().isoformat(),
            "benchmarks": run(args.sizes, repeats=args.repeats, large_sizes=LARGE_SIZES)}
    pathlib.Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
