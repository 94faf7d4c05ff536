// Mining on the CPU: the pairs a mined task keeps (SPEC §3), the same set as
// the CUDA select kernel, from the shared order and draws of
// csrc/loss/pair_math.h and csrc/loss/pair_select.h.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/task_samples.h"
#include "loss/pair_math.h"

namespace spinerank::cpu {

// A pair as positions (a < b) in the task's list of valid samples; since that
// list is in batch order, ordering positions orders batch rows the same way.
struct Pair {
  int a, b;
};

// The pairs mining keeps for a task, sorted by (a, b): all of them when there
// are at most max_pairs, else the k_hard hardest (by the table or the buffered
// selection, csrc/loss/tuning.h) and k_rand drawn uniformly from the rest.
std::vector<Pair> select_pairs(const LossParams& p, const TaskSamples& ts, int K, int64_t max_pairs,
                               double hard_fraction, uint64_t seed, int task);

}  // namespace spinerank::cpu
