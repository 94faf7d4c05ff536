// One task's samples as the CPU loss and mining kernels see them: gathered
// from the (B, T) inputs in batch order, in double, and grouped by grade.
// Everything between gather_task and write_task_grad is dtype-free.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace spinerank::cpu {

// The valid (non-missing) samples of one task, in batch order. Grades are
// below K <= kMaxNumGrades (checked by check_values), so they fit an int.
struct TaskSamples {
  std::vector<double> s;
  std::vector<int> y;
  std::vector<int> row;
  int max_grade = -1;  // the largest grade present (-1: none)
  int n() const { return int(s.size()); }
};

// A task's samples grouped by grade. Only the grades that occur form groups,
// in increasing grade order, batch order kept within a group: group c has
// grade grade[c] and holds positions start[c] .. start[c + 1] - 1; pos[k] is
// the sample at position k and s[k] its score; with_group, group[a] is sample
// a's group. Every size and loop depends on the samples, never on K: the
// loops over groups and pairs of groups cost O(G) and O(G^2) for G <= min(n, K)
// grades present, and the grouping O(n + largest grade) or O(n log n).
struct GradeGroups {
  std::vector<int> grade, start, pos, group;
  std::vector<double> s;
  int count() const { return int(grade.size()); }
  int size(int c) const { return start[c + 1] - start[c]; }
};

// Fills gg (its buffers are reused between calls).
void group_by_grade(const TaskSamples& ts, GradeGroups& gg, bool with_group = false);

inline GradeGroups group_by_grade(const TaskSamples& ts, bool with_group = false) {
  GradeGroups gg;
  group_by_grade(ts, gg, with_group);
  return gg;
}

// The grades that occur (ascending) and each sample's group among them,
// without grouping the samples: what the mining table needs.
struct GroupIndex {
  std::vector<int> grade, group;
};
GroupIndex group_index(const TaskSamples& ts);

// Task t's valid samples, in batch order, from contiguous (B, T) inputs, into
// ts (overwritten).
void gather_task(const at::Tensor& scores, const at::Tensor& grades, int64_t t, TaskSamples& ts);

// Column t of pair_grad: factor * g[a] at task t's valid samples, 0 elsewhere
// (pair_grad is allocated uninitialised; every column is written once).
void write_task_grad(at::Tensor& pair_grad, const TaskSamples& ts, const std::vector<double>& g,
                     double factor, int64_t t);

// Tasks per thread: all of them (no thread pool) when the batch has too little
// work to pay for waking the pool (~10 us on 2 cores). A mined pair costs
// ~20 ns (selection), an all-pairs pair ~0.5 ns.
inline int64_t task_grain(int64_t B, int64_t T, bool mining) {
  constexpr int64_t kMinParallelWork = 1 << 15;
  const int64_t work = B * (B - 1) / 2 * T * (mining ? 40 : 1);
  return work < kMinParallelWork ? std::max<int64_t>(T, 1) : 1;
}

}  // namespace spinerank::cpu
