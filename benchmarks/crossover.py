"""Where the sorted all-pairs path overtakes the direct pair loop (kSortedPairsMinN).

    python benchmarks/crossover.py [n ...]

One thread, T = 11 tasks of the default table, no missing grades (so every task
has n valid samples), squared hinge, forward only (backward only scales the
saved gradient). For each n both paths run on the same input, interleaved three
times; printed: the best time of each and the direct / sorted ratios. The path
is forced with torch.ops.spinerank_ext._sorted_pairs_min_n.
"""
import sys
import time

import torch

import spinerank_ext  # noqa: F401  (loads the ops)

TASK_KS = (5, 4, 4, 3, 4, 4, 4, 4, 4, 4, 4)
ops = torch.ops.spinerank_ext


def best_time(scores, grades, threshold, repeats):
    ops._sorted_pairs_min_n(threshold)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        ops.pairwise_rank_loss(scores, grades, list(TASK_KS), 10.0, 0.5, 1.5, 1.0, 0.25, True, "squared_hinge",
                               1.0, -1, 0.7, "mean", None)
        best = min(best, time.perf_counter() - start)
    return best


def main(sizes):
    torch.set_num_threads(1)
    default = ops._sorted_pairs_min_n(-1)
    try:
        for n in sizes:
            g = torch.Generator().manual_seed(n)
            scores = torch.rand(n, len(TASK_KS), generator=g) * 10
            grades = torch.stack([torch.randint(0, k, (n,), generator=g) for k in TASK_KS], dim=1)
            repeats = max(20, int(3e6 / n / n))
            ratios = []
            for _ in range(3):
                direct = best_time(scores, grades, 2**62, repeats)
                fast = best_time(scores, grades, 0, repeats)
                ratios.append(direct / fast)
            print(f"n={n}: direct {direct * 1e6:.0f} us, sorted {fast * 1e6:.0f} us, "
                  f"direct / sorted {', '.join(f'{r:.2f}' for r in sorted(ratios))}", flush=True)
    finally:
        ops._sorted_pairs_min_n(default)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [96, 128, 192, 256, 320, 384, 512])
