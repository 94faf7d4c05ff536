"""The CUDA benchmark script's cases, once each, untimed (the timed run is bench_cuda.py)."""
import pytest
import torch
from bench_cuda import run


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_benchmark_cases_run_and_check_their_results():
    results = run(sizes=(32, 512), warmup=1, repeats=1)
    assert all(r["stats"]["median"] is not None for r in results if r["extra_info"]["impl"] == "fused")


def test_benchmark_script_logic_on_the_cpu():
    # The same cases, checks and result records on the CPU, so the script is
    # known to work before a GPU is spent on it.
    results = run(sizes=(32,), warmup=0, repeats=1, device="cpu")
    assert [(r["extra_info"]["pairs"], r["extra_info"]["impl"]) for r in results] == [
        ("all", "fused"), ("all", "reference"), ("all", "reference_compiled"),
        ("mined 128", "fused"), ("mined 128", "reference")]
    assert all(r["stats"]["median"] > 0 for r in results)
