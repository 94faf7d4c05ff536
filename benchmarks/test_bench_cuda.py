"""Every CUDA benchmark case once, untimed (the timed run is bench_cuda.py). Skipped without a GPU."""
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cuda_benchmark_cases_run_and_check_their_results():
    from bench_cuda import run

    results = run(sizes=(32, 512), warmup=1, repeats=1)
    assert all(r["stats"]["median"] is not None for r in results if r["extra_info"]["impl"] == "fused")
