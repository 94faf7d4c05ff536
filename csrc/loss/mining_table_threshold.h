// Which selection of the hardest pairs a mined task takes on CPU: tasks with at
// most mining_table_max_pairs() pairs write every pair's hardness to a table
// and select from it (fast, O(P) memory); larger ones use the buffered
// selection, which holds O(max_pairs) candidates whatever P is. Both select
// the same pairs.
#pragma once

#include <cstdint>

namespace spinerank {

// The crossover measured on the project's 2-core Xeon, one thread, T = 11,
// K = 3..5, max_pairs = 500 (benchmarks/crossover.py --mining): the table took
// 0.34x the buffered selection's time at P = 8k, 0.66x at 131k, 0.86x at 262k
// and 1.03x at 524k (with max_pairs = 4n: 0.51x at 262k, 0.62x at 524k). The
// table and its candidate list, 12 bytes per pair, stay allocated per thread
// (3 MB at this cap): a fresh allocation is page-faulted in on every call.
constexpr int64_t kMiningTableMaxPairs = int64_t(1) << 18;

int64_t mining_table_max_pairs();
// Sets the cap (n >= 0) and returns the previous one; n < 0 only reads it. For
// tests (both selections on the same input) and benchmarks; registered as the
// op spinerank_ext::_mining_table_max_pairs.
int64_t exchange_mining_table_max_pairs(int64_t n);

}  // namespace spinerank
