// The loss kernels' path thresholds, each a measured crossover between two
// implementations that give the same result, and the state behind the private
// ops that move them (csrc/tuning.cpp: tests run both paths on one input,
// benchmarks time each). All of it lives in the CPU library _C; the CUDA
// library reads its threshold through the dispatcher (it does not link _C).
#pragma once

#include <cstdint>

namespace spinerank {

// All pairs, CPU: tasks with at least sorted_pairs_min_n() valid samples take
// the sorted squared-hinge path (csrc/loss/sorted_pairs.h), smaller ones the
// direct pair loop, which is faster there. The logistic pair function always
// takes the direct loop: it has no closed form over a run of partners.
// Measured on the project's 2-core Xeon, one thread, T = 11, K = 3..5
// (benchmarks/crossover.py, 2026-12-07, the sorted path on sorted_hinge_row):
// the direct loop took 0.74x the sorted path's time at n = 384, 0.93x at 512,
// 1.04x at 576, 1.23x at 768.
constexpr int64_t kSortedPairsMinN = 576;

// Mining, CPU: tasks with at most mining_table_max_pairs() pairs write every
// pair's hardness to a table and select from it (fast, O(P) memory); larger
// ones use the buffered selection, which holds O(max_pairs) candidates
// whatever P is. Both select the same pairs. Measured as above with
// max_pairs = 500 (benchmarks/crossover.py --mining): the table took 0.34x the
// buffered selection's time at P = 8k, 0.66x at 131k, 0.86x at 262k and 1.03x
// at 524k (with max_pairs = 4n: 0.51x at 262k, 0.62x at 524k). The table and
// its candidate list, 12 bytes per pair, stay allocated per thread (3 MB at
// this cap): a fresh allocation is page-faulted in on every call.
constexpr int64_t kMiningTableMaxPairs = int64_t(1) << 18;

// All pairs, CUDA: the smallest batch that takes the sorted path
// (csrc/loss/sorted_pairs_generic.h). NOT MEASURED: no GPU has run this code
// yet. The direct kernel evaluates B^2 pairs per task, the sorted path costs
// two segmented sorts and O(G log B) per sample, so the direct kernel should
// win for small B; `make bench-cuda` times both to put the crossover here.
constexpr int64_t kCudaSortedMinBatch = 16384;

// The current values (relaxed atomic reads), in _C.
int64_t sorted_pairs_min_n();
int64_t mining_table_max_pairs();

}  // namespace spinerank
