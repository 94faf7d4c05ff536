// Which all-pairs path a task takes on CPU: tasks with at least
// sorted_pairs_min_n() valid samples use the sorted squared-hinge path
// (csrc/loss/sorted_pairs.h), smaller ones the direct pair loop, which is faster
// there. The logistic pair function always takes the direct loop: it has no
// closed form over a run of partners.
#pragma once

#include <cstdint>

namespace spinerank {

// The crossover measured on the project's 2-core Xeon, one thread, T = 11, K = 3..5:
// the direct loop took 0.83x the sorted path's time at n = 256, 0.99x at 384, 1.16x at 512.
constexpr int64_t kSortedPairsMinN = 384;

int64_t sorted_pairs_min_n();
// Sets the threshold (n >= 0) and returns the previous one; n < 0 only reads it.
// For tests (both paths on the same input) and benchmarks; registered as the
// op spinerank_ext::_sorted_pairs_min_n.
int64_t exchange_sorted_pairs_min_n(int64_t n);

}  // namespace spinerank
