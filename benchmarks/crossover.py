"""Where the CPU kernels switch paths, measured:

    python benchmarks/crossover.py [n ...]            # kSortedPairsMinN
    python benchmarks/crossover.py --mining [n ...]   # kMiningTableMaxPairs

All pairs: where the sorted path overtakes the direct pair loop. Mining: up to
which task size (pairs) selecting the hardest pairs from a table of every
pair's hardness beats the buffered selection, at max_pairs = 500 and 4 n.

One thread, T = 11 tasks of the default table, no missing grades (so every task
has n valid samples), squared hinge, forward only (backward only scales the
saved gradient). For each n both paths run on the same input, interleaved three
times; printed: the best time of each and the ratios. The path is forced with
torch.ops.spinerank_ext._sorted_pairs_min_n / _mining_table_max_pairs.
"""
import contextlib
import sys
import time

import torch

import spinerank_ext  # noqa: F401  (loads the ops)

TASK_KS = (5, 4, 4, 3, 4, 4, 4, 4, 4, 4, 4)
ops = torch.ops.spinerank_ext


def best_time(scores, grades, repeats, max_pairs=-1):
    best = float("inf")
    seed = None if max_pairs == -1 else torch.tensor(0)
    for _ in range(repeats):
        start = time.perf_counter()
        ops.pairwise_rank_loss(scores, grades, list(TASK_KS), 10.0, 0.5, 1.5, 1.0, 0.25, True, "squared_hinge",
                               1.0, max_pairs, 0.7, "mean", seed)
        best = min(best, time.perf_counter() - start)
    return best


def batch(n):
    g = torch.Generator().manual_seed(n)
    scores = torch.rand(n, len(TASK_KS), generator=g) * 10
    grades = torch.stack([torch.randint(0, k, (n,), generator=g) for k in TASK_KS], dim=1)
    return scores, grades


def compare(label_a, set_a, label_b, set_b, scores, grades, repeats, max_pairs=-1):
    """Both settings interleaved three times: best times of the last round and every round's ratio a / b."""
    ratios = []
    for _ in range(3):
        set_a()
        a = best_time(scores, grades, repeats, max_pairs)
        set_b()
        b = best_time(scores, grades, repeats, max_pairs)
        ratios.append(a / b)
    return (f"{label_a} {a * 1e6:.0f} us, {label_b} {b * 1e6:.0f} us, "
            f"{label_a} / {label_b} {', '.join(f'{r:.2f}' for r in sorted(ratios))}")


@contextlib.contextmanager
def restored(op):
    """Puts a path threshold (op(-1) reads it, op(v) sets it) back afterwards."""
    default = op(-1)
    try:
        yield
    finally:
        op(default)


def sorted_pairs(sizes):
    with restored(ops._sorted_pairs_min_n):
        for n in sizes:
            scores, grades = batch(n)
            repeats = max(20, int(3e6 / n / n))
            line = compare("direct", lambda: ops._sorted_pairs_min_n(2**62), "sorted",
                           lambda: ops._sorted_pairs_min_n(0), scores, grades, repeats)
            print(f"n={n}: {line}", flush=True)


def mining(sizes):
    with restored(ops._mining_table_max_pairs):
        for n in sizes:
            scores, grades = batch(n)
            repeats = max(10, int(1e6 / n / n))
            for max_pairs in (500, 4 * n):
                line = compare("table", lambda: ops._mining_table_max_pairs(2**62), "buffered",
                               lambda: ops._mining_table_max_pairs(0), scores, grades, repeats, max_pairs)
                print(f"n={n} (P={n * (n - 1) // 2}), max_pairs={max_pairs}: {line}", flush=True)


def main(argv):
    torch.set_num_threads(1)
    if argv and argv[0] == "--mining":
        mining([int(a) for a in argv[1:]] or [64, 128, 256, 512, 724, 1024, 1448, 2048])
    else:
        sorted_pairs([int(a) for a in argv] or [256, 384, 512, 576, 640, 768])


if __name__ == "__main__":
    main(sys.argv[1:])
