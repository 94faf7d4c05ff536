"""The DDP benchmark script's check, once, tiny and untimed (the timed run is bench_ddp.py)."""
from bench_ddp import CASES, run


def test_global_pairs_count_the_pairs_of_one_process_with_the_whole_batch():
    cases = [c for c in CASES if c[0] in ("1 process, batch 32", "2 processes x batch 16, global pairs")]
    results = run(width=4, warmup=0, repeats=2, cases=cases)  # run() asserts the equality itself
    assert len(results) == 2 and all(r["step_s"] > 0 and len(r["pairs"]) == 2 for r in results)
    assert results[0]["pairs"][0] > 0
