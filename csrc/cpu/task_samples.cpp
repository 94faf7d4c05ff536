// Gathering, grouping and writing back one task's samples (task_samples.h).
#include "cpu/task_samples.h"

#include <ATen/Dispatch.h>

#include <algorithm>
#include <numeric>

namespace spinerank::cpu {

namespace {

// Whether grades 0 .. range - 1 of n samples are grouped by a counting sort over
// the range (else by a sort of the samples): the range must not dwarf n.
bool counting_sort_fits(int64_t range, int n) { return range <= 4 * int64_t(n) + 64; }

}  // namespace

GroupIndex group_index(const TaskSamples& ts) {
  const int n = ts.n();
  const int64_t range = int64_t(ts.max_grade) + 1;
  if (!counting_sort_fits(range, n)) {
    GradeGroups gg = group_by_grade(ts, /*with_group=*/true);
    return {std::move(gg.grade), std::move(gg.group)};
  }
  // group_of[c]: the group of grade c (-1: absent; 0 marks present first).
  std::vector<int> group_of(range, -1);
  for (int a = 0; a < n; ++a) group_of[ts.y[a]] = 0;
  GroupIndex gi;
  gi.grade.reserve(size_t(std::min<int64_t>(range, n)));
  for (int64_t c = 0; c < range; ++c) {
    if (group_of[c] == 0) {
      group_of[c] = int(gi.grade.size());
      gi.grade.push_back(int(c));
    }
  }
  gi.group.resize(n);
  for (int a = 0; a < n; ++a) gi.group[a] = group_of[ts.y[a]];
  return gi;
}

void group_by_grade(const TaskSamples& ts, GradeGroups& gg, bool with_group) {
  const int n = ts.n();
  gg.grade.clear();
  gg.start.clear();
  gg.group.clear();
  gg.pos.resize(n);
  gg.s.resize(n);
  const int64_t range = int64_t(ts.max_grade) + 1;  // grades are 0 .. range - 1
  gg.grade.reserve(size_t(std::min<int64_t>(range, n)));
  if (counting_sort_fits(range, n)) {
    // A counting sort over the grades' range; `first` ends up as gg.start.
    std::vector<int>& first = gg.start;
    first.assign(range + 1, 0);
    for (int a = 0; a < n; ++a) ++first[ts.y[a] + 1];
    for (int64_t c = 0; c < range; ++c) first[c + 1] += first[c];  // first[c]: where grade c starts
    for (int a = 0; a < n; ++a) {
      const int k = first[ts.y[a]]++;  // afterwards first[c] is where grade c ends
      gg.pos[k] = a;
      gg.s[k] = ts.s[a];
    }
    // Keep the grades that occur, compacting their starts in place (the
    // write index never passes the read index).
    int groups = 0, begin = 0;
    for (int64_t c = 0; c < range; ++c) {
      const int end = first[c];
      if (end > begin) {
        gg.grade.push_back(int(c));
        first[groups++] = begin;
      }
      begin = end;
    }
    first[groups] = n;
    first.resize(groups + 1);
  } else {
    // Few samples with large grades: a stable sort by grade.
    gg.start.reserve(size_t(n) + 1);
    std::iota(gg.pos.begin(), gg.pos.end(), 0);
    std::stable_sort(gg.pos.begin(), gg.pos.end(), [&](int u, int v) { return ts.y[u] < ts.y[v]; });
    for (int k = 0; k < n; ++k) {
      const int a = gg.pos[k];
      if (k == 0 || ts.y[a] != ts.y[gg.pos[k - 1]]) {
        gg.grade.push_back(ts.y[a]);
        gg.start.push_back(k);
      }
      gg.s[k] = ts.s[a];
    }
    gg.start.push_back(n);
  }
  if (with_group) {
    gg.group.resize(n);
    for (int c = 0; c < gg.count(); ++c)
      for (int k = gg.start[c]; k < gg.start[c + 1]; ++k) gg.group[gg.pos[k]] = c;
  }
}

void gather_task(const at::Tensor& scores, const at::Tensor& grades, int64_t t, TaskSamples& ts) {
  const int64_t B = scores.size(0), T = scores.size(1);
  // Sized for every row, then cut to the valid ones: no push_back in the loop.
  ts.s.resize(B);
  ts.y.resize(B);
  ts.row.resize(B);
  int n = 0, max_grade = -1;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "gather_task", [&] {
    using scalar_t_ = scalar_t;
    AT_DISPATCH_INDEX_TYPES(grades.scalar_type(), "gather_task_grades", [&] {
      const scalar_t_* sp = scores.const_data_ptr<scalar_t_>();
      const index_t* yp = grades.const_data_ptr<index_t>();
      double* s = ts.s.data();
      int* y = ts.y.data();
      int* row = ts.row.data();
      for (int64_t b = 0; b < B; ++b) {
        const index_t grade = yp[b * T + t];
        if (grade < 0) continue;
        s[n] = double(sp[b * T + t]);
        y[n] = int(grade);
        row[n] = int(b);
        max_grade = std::max(max_grade, int(grade));
        ++n;
      }
    });
  });
  ts.s.resize(n);
  ts.y.resize(n);
  ts.row.resize(n);
  ts.max_grade = max_grade;
}

void write_task_grad(at::Tensor& pair_grad, const TaskSamples& ts, const std::vector<double>& g,
                     double factor, int64_t t) {
  const int64_t B = pair_grad.size(0), T = pair_grad.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pair_grad.scalar_type(), "write_task_grad", [&] {
    scalar_t* gp = pair_grad.data_ptr<scalar_t>();
    int a = 0;  // ts.row is ascending: the next valid sample
    for (int64_t b = 0; b < B; ++b) {
      const bool valid = a < ts.n() && ts.row[a] == b;
      gp[b * T + t] = valid ? scalar_t(g[a++] * factor) : scalar_t(0);
    }
  });
}

}  // namespace spinerank::cpu
