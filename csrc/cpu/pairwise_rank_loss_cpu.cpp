// CPU kernels of pairwise_rank_loss and mined_pairs.
//
// Work is split over tasks: each task is computed start to finish by one thread,
// in a fixed order, so results do not depend on the number of threads. Scores
// are accumulated in double whatever their dtype. No (B, B) or pair-list tensor
// is allocated: one pass over a task's pairs accumulates the loss, the pair
// counts and the per-sample gradient. Mining keeps a per-thread table of every
// pair's hardness for tasks of at most mining_table_max_pairs() pairs, and
// O(max_pairs) candidates for larger ones.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <c10/util/TypeCast.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <numeric>
#include <vector>

#include "loss/pair_math.h"
#include "loss/pair_select.h"
#include "loss/args.h"
#include "loss/check_values.h"
#include "loss/sorted_pairs.h"
#include "loss/sorted_pairs_generic.h"
#include "loss/mining_table_threshold.h"
#include "loss/sorted_pairs_threshold.h"

namespace spinerank {

namespace {
std::atomic<int64_t> sorted_pairs_threshold{kSortedPairsMinN};
std::atomic<int64_t> mining_table_cap{kMiningTableMaxPairs};
}  // namespace

int64_t sorted_pairs_min_n() { return sorted_pairs_threshold.load(std::memory_order_relaxed); }

int64_t exchange_sorted_pairs_min_n(int64_t n) {
  return n < 0 ? sorted_pairs_min_n() : sorted_pairs_threshold.exchange(n);
}

int64_t mining_table_max_pairs() { return mining_table_cap.load(std::memory_order_relaxed); }

int64_t exchange_mining_table_max_pairs(int64_t n) {
  return n < 0 ? mining_table_max_pairs() : mining_table_cap.exchange(n);
}

namespace {

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
};

// Fills gg (its buffers are reused: see TaskScratch).
void group_by_grade(const TaskSamples& ts, GradeGroups& gg, bool with_group = false);

GradeGroups group_by_grade(const TaskSamples& ts, bool with_group = false) {
  GradeGroups gg;
  group_by_grade(ts, gg, with_group);
  return gg;
}

// Whether grades 0 .. range - 1 of n samples are grouped by a counting sort over
// the range (else by a sort of the samples): the range must not dwarf n.
bool counting_sort_fits(int64_t range, int n) { return range <= 4 * int64_t(n) + 64; }

// The grades that occur (ascending) and each sample's group among them,
// without grouping the samples: what the mining table needs.
struct GroupIndex {
  std::vector<int> grade, group;
};

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

// Tasks per thread: all of them (no thread pool) when the batch has too little
// work to pay for waking the pool (~10 us on 2 cores). A mined pair costs
// ~20 ns (selection), an all-pairs pair ~0.5 ns.
int64_t task_grain(int64_t B, int64_t T, bool mining) {
  constexpr int64_t kMinParallelWork = 1 << 15;
  const int64_t work = B * (B - 1) / 2 * T * (mining ? 40 : 1);
  return work < kMinParallelWork ? std::max<int64_t>(T, 1) : 1;
}

// Task t's valid samples, in batch order, from contiguous (B, T) inputs, into
// ts (overwritten). With write_task_grad, the only dtype-dependent code:
// everything between is double.
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

// Column t of pair_grad: factor * g[a] at task t's valid samples, 0 elsewhere
// (pair_grad is allocated uninitialised; every column is written once).
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

// Per-thread buffers of the all-pairs path, kept between calls: at B = 32 a
// task's pair arithmetic takes a few hundred ns, and a dozen fresh vectors
// per task cost as much again (they hold O(B) entries, and are kept at the
// largest size a thread has seen).
struct TaskScratch {
  TaskSamples ts;
  GradeGroups gg;
  std::vector<double> g, gs;
};
TaskScratch& task_scratch() {
  thread_local TaskScratch scratch;
  return scratch;
}

struct TaskLoss {
  double loss = 0.0;
  int64_t n_dis = 0;
  int64_t n_sim = 0;
};

// All pairs of one task. Samples are grouped by grade so that within a block of
// two grade groups the gap, margin and weight are constants and the inner loop
// is branch-free and vectorisable; same-grade pairs use the closed form of
// similar_pair. Each ordinal pair is visited once, the similar ones not at all.
template <PairFn F>
TaskLoss all_pairs_loss(const LossParams& p, const TaskSamples& ts, int K, double* g,
                        TaskScratch& scratch) {
  const int n = ts.n();
  const double inv_km1 = 1.0 / double(K - 1);

  group_by_grade(ts, scratch.gg);
  const GradeGroups& gg = scratch.gg;
  const int G = gg.count();
  const std::vector<int>& start = gg.start;
  const std::vector<int>& pos = gg.pos;
  const std::vector<double>& s = gg.s;
  std::vector<double>& gs = scratch.gs;
  gs.assign(n, 0.0);

  TaskLoss out;
  for (int c = 0; c < G; ++c) {
    const int64_t m = start[c + 1] - start[c];
    out.n_sim += m * (m - 1) / 2;
  }
  out.n_dis = int64_t(n) * (n - 1) / 2 - out.n_sim;
  const double cd = dis_factor(p, out.n_dis, out.n_sim);
  const double cs = sim_factor(p, out.n_dis, out.n_sim);

  double sum_dis = 0.0, sum_sim = 0.0;
  for (int c = 0; c < G; ++c) {
    const int lo = start[c], hi = start[c + 1], m = hi - lo;
    if (m < 2) continue;
    double mean = 0.0;
    for (int k = lo; k < hi; ++k) mean += s[k];
    mean /= m;
    double ss = 0.0;
    for (int k = lo; k < hi; ++k) {
      const double centred = s[k] - mean;
      ss += centred * centred;
      gs[k] += cs * 2.0 * m * centred;
    }
    sum_sim += m * ss;
  }

  const LossParams q = p;  // a local copy: provably not aliased by the stores below
  for (int c_hi = 1; c_hi < G; ++c_hi) {
    for (int c_lo = 0; c_lo < c_hi; ++c_lo) {
      const double gap = grade_gap(gg.grade[c_hi] - gg.grade[c_lo], inv_km1);
      const int b0 = start[c_lo], b1 = start[c_lo + 1];
      double* glo = gs.data();
      const double* slo = s.data();
      for (int a = start[c_hi]; a < start[c_hi + 1]; ++a) {
        const double sa = s[a];
        double ga = 0.0, la = 0.0;
#pragma omp simd reduction(+ : ga, la)
        for (int b = b0; b < b1; ++b) {
          // The more severe sample is a: rdelta = s_a - s_b.
          const PairTerm<double> o = ordinal_pair<double, F>(q, sa - slo[b], gap);
          la += o.loss;
          ga += o.dloss;
          glo[b] -= cd * o.dloss;
        }
        gs[a] += cd * ga;
        sum_dis += la;
      }
    }
  }
  for (int k = 0; k < n; ++k) g[pos[k]] += gs[k];
  out.loss = cd * sum_dis + cs * sum_sim;
  return out;
}

// The same loss and gradient as all_pairs_loss<SquaredHinge> without visiting
// pairs (csrc/loss/sorted_pairs.h): each grade group sorted by score, then per
// sample and lower grade one bisection for its run of margin-violating
// partners and that run's range sums. O(G^2 n log n) time, O(n) memory.
TaskLoss sorted_hinge_loss(const LossParams& p, const TaskSamples& ts, int K, double* g) {
  const int n = ts.n();
  const double inv_km1 = 1.0 / double(K - 1);

  GradeGroups gg = group_by_grade(ts);
  const int G = gg.count();
  const std::vector<int>& start = gg.start;
  std::vector<int>& pos = gg.pos;
  for (int c = 0; c < G; ++c) {
    // Equal scores may land in any order: only sums over runs are used, and
    // the test below never splits equal scores.
    std::sort(pos.begin() + start[c], pos.begin() + start[c + 1],
              [&](int u, int v) { return ts.s[u] < ts.s[v]; });
  }
  double mean = 0.0;
  for (int a = 0; a < n; ++a) mean += ts.s[a];
  mean /= n;
  // s: sorted scores (for the violation test, exactly as the direct path sees
  // them); x: centred (for the sums). pre1: sum of x over the group up to k
  // inclusive; suf1, suf2: sum of x and x^2 from k to the group's end.
  std::vector<double> s(n), x(n), pre1(n), suf1(n), suf2(n), gs(n, 0.0);
  for (int k = 0; k < n; ++k) {
    s[k] = ts.s[pos[k]];
    x[k] = s[k] - mean;
  }
  TaskLoss out;
  double sum_sim = 0.0;
  std::vector<double> gsim(n, 0.0);
  for (int c = 0; c < G; ++c) {
    const int lo = start[c], hi = start[c + 1], m = hi - lo;
    double run = 0.0;
    for (int k = lo; k < hi; ++k) pre1[k] = run += x[k];
    double r1 = 0.0, r2 = 0.0;
    for (int k = hi - 1; k >= lo; --k) {
      suf1[k] = r1 += x[k];
      suf2[k] = r2 += x[k] * x[k];
    }
    out.n_sim += int64_t(m) * (m - 1) / 2;
    if (m < 2) continue;
    // Same-grade pairs: sum_{i<j} (s_i - s_j)^2 = m * sum (s - group mean)^2.
    const double group_mean = run / m;
    double ss = 0.0;
    for (int k = lo; k < hi; ++k) {
      const double centred = x[k] - group_mean;
      ss += centred * centred;
      gsim[k] = 2.0 * m * centred;
    }
    sum_sim += m * ss;
  }
  out.n_dis = int64_t(n) * (n - 1) / 2 - out.n_sim;
  const double cd = dis_factor(p, out.n_dis, out.n_sim);
  const double cs = sim_factor(p, out.n_dis, out.n_sim);
  for (int k = 0; k < n; ++k) gs[k] = cs * gsim[k];

  double sum_dis = 0.0;
  for (int c_hi = 1; c_hi < G; ++c_hi) {
    const int h0 = start[c_hi], h1 = start[c_hi + 1];
    for (int c_lo = 0; c_lo < c_hi; ++c_lo) {
      const int l0 = start[c_lo], l1 = start[c_lo + 1];
      if (h0 == h1 || l0 == l1) continue;
      const double gap = grade_gap(gg.grade[c_hi] - gg.grade[c_lo], inv_km1);
      const double margin = pair_margin(p, gap), w = pair_weight(p, gap);
      double block = 0.0;
      for (int a = h0; a < h1; ++a) {  // the more severe side: its violating partners
        const int j0 = l0 + int(first_violating_lo(&s[l0], l1 - l0, margin, s[a]));
        if (j0 == l1) continue;
        const ShiftedSums h = shifted_sums(margin - x[a], l1 - j0, suf1[j0], suf2[j0]);
        block += h.sum_sq;
        gs[a] -= cd * 2.0 * w * h.sum;
      }
      sum_dis += w * block;
      for (int b = l0; b < l1; ++b) {  // the less severe side
        const int cnt = int(violating_hi_count(&s[h0], h1 - h0, margin, s[b]));
        if (cnt == 0) continue;
        gs[b] += cd * 2.0 * w * (cnt * (margin + x[b]) - pre1[h0 + cnt - 1]);
      }
    }
  }
  for (int k = 0; k < n; ++k) g[pos[k]] += gs[k];
  out.loss = cd * sum_dis + cs * sum_sim;
  return out;
}

// A pair as positions (a < b) in the task's list of valid samples; since that
// list is in batch order, ordering positions orders batch rows the same way.
struct Pair {
  int a, b;
};

// The k hardest pairs of a task (hardness, then smaller a, then smaller b), as
// pair indices in lexicographic order, sorted. Buffered selection: a buffer of
// 2k candidates is cut back to the k hardest whenever it fills, and the k-th
// hardest then rejects most later candidates with one comparison: O(P) time on
// average, O(k) memory. The result is the k first pairs of a total order, so
// it does not depend on the order the pairs are visited in: per sample a, the
// partners b > a are visited grade group by grade group, where the margin and
// sign are constants and the hardness of a run of partners is a vectorisable
// loop; only runs with a pair at least as hard as the k-th go through the
// buffer.
std::vector<int64_t> hardest_pairs(const LossParams& p, const TaskSamples& ts, int K, int64_t k) {
  if (k == 0) return {};
  const int n = ts.n();
  const double inv_km1 = 1.0 / double(K - 1);
  // Samples grouped by grade, batch order kept within a group: the partners
  // b > a of a group are then a suffix of it.
  const GradeGroups gg = group_by_grade(ts);
  const int G = gg.count();
  const std::vector<int>& start = gg.start;
  const std::vector<int>& position = gg.pos;
  const std::vector<double>& score = gg.s;
  std::vector<int> next(start.begin(), start.end() - 1);  // per group: first member past a

  // Larger hardness first; equal: smaller pair index, i.e. smaller a, then b.
  struct Hard {
    double h;
    uint64_t key;
    int64_t index;
  };
  auto harder_first = [](const Hard& u, const Hard& v) {
    return u.key != v.key ? u.key > v.key : u.index < v.index;
  };
  std::vector<Hard> buf;
  buf.reserve(2 * k);
  bool full = false;  // once true, buf[k - 1] is the k-th hardest pair so far
  double threshold = -INFINITY;  // its hardness: harder or equal pairs may enter
  auto consider = [&](double h, int64_t index) {
    const Hard c{h, hardness_key(h), index};
    if (full && !harder_first(c, buf[k - 1])) return;
    buf.push_back(c);
    if (int64_t(buf.size()) == 2 * k) {
      std::nth_element(buf.begin(), buf.begin() + (k - 1), buf.end(), harder_first);
      buf.resize(k);
      full = true;
      threshold = buf[k - 1].h;
    }
  };
  // The hardness of a run of partners b of a, with the bits of mining_hardness:
  // r * delta is exact for r = +-1, and m - x equals add_rn(m, -x).
  constexpr int kChunk = 64;
  auto scan = [&](int a, int lo, int hi, auto hardness) {
    const int64_t row = pair_row_offset(n, a) - a - 1;  // + b: the index of pair (a, b)
    const double* sc = score.data();
    for (int b0 = lo; b0 < hi; b0 += kChunk) {
      const int b1 = std::min(hi, b0 + kChunk);
      const double bound = threshold;
      int any = 0;
#pragma omp simd reduction(| : any)
      for (int b = b0; b < b1; ++b) any |= int(hardness(sc[b]) >= bound);
      if (!any) continue;
      for (int b = b0; b < b1; ++b) {
        const double h = hardness(sc[b]);
        if (h >= threshold) consider(h, row + position[b]);
      }
    }
  };
  for (int a = 0; a < n; ++a) {
    const double sa = ts.s[a];
    const int ya = ts.y[a];
    for (int c = 0; c < G; ++c) {
      int& lo = next[c];
      while (lo < start[c + 1] && position[lo] <= a) ++lo;
      if (lo == start[c + 1]) continue;
      const int d = ya - gg.grade[c];
      if (d == 0) {
        scan(a, lo, start[c + 1], [sa](double sb) { return std::fabs(sa - sb); });
      } else {
        const double m = mining_margin(p, d, inv_km1), r = d > 0 ? 1.0 : -1.0;
        scan(a, lo, start[c + 1], [sa, m, r](double sb) { return m - r * (sa - sb); });
      }
    }
  }
  if (int64_t(buf.size()) > k) {
    std::nth_element(buf.begin(), buf.begin() + (k - 1), buf.end(), harder_first);
    buf.resize(k);
  }
  std::vector<int64_t> out;
  out.reserve(buf.size());
  for (const Hard& c : buf) out.push_back(c.index);
  std::sort(out.begin(), out.end());
  return out;
}

// The k hardest pairs as hardest_pairs defines them, for tasks whose P pairs'
// hardness fits in a table (P <= mining_table_max_pairs()): every pair's
// hardness is written in pair-index order; a sample's quantile gives a bound
// that at least k pairs reach (checked, lowered if not), leaving a few hundred
// candidates; a histogram of the candidates narrows the k-th largest hardness v
// down to one bucket, where it is selected exactly. One pass over the
// candidates in index order then keeps the pairs harder than v and the first
// ones equal to v: the result comes out sorted, ties broken by the smaller index.
// Per-thread scratch of hardest_pairs_table, kept between calls (at most
// mining_table_max_pairs() entries): a fresh allocation of this size is
// page-faulted in on every call, which cost more than the selection itself at
// P = 130k on the project's machine.
struct TableScratch {
  std::unique_ptr<double[]> hard;
  std::unique_ptr<int[]> cand;
  int64_t size = 0;
};
TableScratch& table_scratch(int64_t P) {
  thread_local TableScratch scratch;
  if (scratch.size < P) {
    scratch.hard.reset(new double[P]);
    scratch.cand.reset(new int[P]);
    scratch.size = P;
  }
  return scratch;
}

std::vector<int64_t> hardest_pairs_table(const LossParams& p, const TaskSamples& ts, int K,
                                         int64_t k) {
  if (k == 0) return {};
  const int n = ts.n();
  const int64_t P = int64_t(n) * (n - 1) / 2;
  const double inv_km1 = 1.0 / double(K - 1);
  // The hardness of pair (a, b) with the bits of mining_hardness (as in
  // hardest_pairs), branch-free so that the loop over b vectorises: with
  // c = y_a, h = max(lin[c][b] - sgn[c][b] * delta, same[c][b] + delta).
  // The first term is m - r * delta for ordinal pairs (r * delta is exact for
  // r = +-1) and -delta for similar ones; the second is delta for similar
  // pairs and -inf otherwise. So h = |delta| or m - r * delta.
  // Rows of the tables by the grade group of a (only the grades present).
  const GroupIndex gi = group_index(ts);
  const int G = int(gi.grade.size());
  std::vector<double> margin(size_t(G) * G, 0.0);  // by the groups of a and b
  for (int c = 0; c < G; ++c)
    for (int c2 = 0; c2 < G; ++c2)
      if (c != c2) margin[size_t(c) * G + c2] = mining_margin(p, gi.grade[c] - gi.grade[c2], inv_km1);
  std::vector<double> lin(size_t(G) * n), sgn(size_t(G) * n), same(size_t(G) * n);
  for (int c = 0; c < G; ++c)
    for (int b = 0; b < n; ++b) {
      const int c2 = gi.group[b];
      lin[size_t(c) * n + b] = margin[size_t(c) * G + c2];
      sgn[size_t(c) * n + b] = c < c2 ? -1.0 : 1.0;  // groups are in grade order
      same[size_t(c) * n + b] = c == c2 ? 0.0 : -INFINITY;
    }
  TableScratch& scratch = table_scratch(P);
  double* const hard = scratch.hard.get();
  {
    const double* s = ts.s.data();
    double* h = hard;
    for (int a = 0; a < n; ++a) {
      const double sa = s[a];
      const size_t c = size_t(gi.group[a]) * n;
      const double* __restrict m = lin.data() + c;
      const double* __restrict r = sgn.data() + c;
      const double* __restrict z = same.data() + c;
      double* __restrict out = h - (a + 1);
      for (int b = a + 1; b < n; ++b) {
        const double delta = sa - s[b];
        const double ordinal = m[b] - r[b] * delta, similar = z[b] + delta;
        out[b] = ordinal < similar ? similar : ordinal;
      }
      h += n - a - 1;
    }
  }
  // The bound: the sample value two standard deviations past the k / P
  // fraction, so that usually a single pass finds >= k pairs at least as hard.
  constexpr int64_t kSample = 256;
  const int64_t S = std::min(P, kSample);
  std::vector<double> sample(S);
  for (int64_t i = 0; i < S; ++i) sample[i] = hard[i * P / S];
  const double expected = double(k) * double(S) / double(P);
  int* const cand = scratch.cand.get();
  int64_t C = 0;
  double bound = -INFINITY;
  for (int64_t rank = int64_t(expected + 2.0 * std::sqrt(expected) + 2.0);; rank = 2 * rank + 1) {
    bound = -INFINITY;  // past the sample's end only -inf is certain
    if (rank < S) {
      std::nth_element(sample.begin(), sample.begin() + rank, sample.end(), std::greater<double>());
      bound = sample[rank];
    }
    C = 0;
    for (int64_t q = 0; q < P; ++q) {  // branch-free compaction
      cand[C] = int(q);
      C += hard[q] >= bound;
    }
    if (C >= k) break;
  }
  std::vector<double> value(C);
  for (int64_t i = 0; i < C; ++i) value[i] = hard[cand[i]];
  // Histogram of the candidates over [bound, the sample's largest value]
  // (larger values go to the last bucket): the bucket function is monotone in
  // h, so the k-th largest value lies in the bucket where the count from the
  // top reaches k.
  const double top = *std::max_element(sample.begin(), sample.end());
  const double lo = std::isfinite(bound) ? bound : *std::min_element(value.begin(), value.end());
  constexpr int kBuckets = 256;
  const double scale = top > lo ? double(kBuckets) / (top - lo) : 0.0;
  auto bucket = [&](double h) {
    const double x = (h - lo) * scale;
    return x >= double(kBuckets - 1) ? kBuckets - 1 : int(x);
  };
  std::vector<int64_t> count(kBuckets, 0);
  for (int64_t i = 0; i < C; ++i) ++count[bucket(value[i])];
  int64_t above = 0;  // candidates in buckets above the k-th largest's
  int pick = kBuckets - 1;
  while (above + count[pick] < k) above += count[pick--];
  std::vector<double> in_bucket;
  in_bucket.reserve(count[pick]);
  for (int64_t i = 0; i < C; ++i)
    if (bucket(value[i]) == pick) in_bucket.push_back(value[i]);
  const int64_t r = k - above - 1;  // v is the r-th largest (0-based) in the bucket
  std::nth_element(in_bucket.begin(), in_bucket.begin() + r, in_bucket.end(), std::greater<double>());
  const double v = in_bucket[r];
  int64_t ties = k - above;  // the number of pairs equal to v to keep
  for (const double h : in_bucket) ties -= h > v;
  std::vector<int64_t> out(k + 1);  // + 1: the branch-free loop writes one past the last kept
  int64_t kept = 0;
  for (int64_t i = 0; i < C; ++i) {
    const bool tie = value[i] == v, keep = value[i] > v || (tie && ties > 0);
    out[kept] = cand[i];
    kept += keep;
    ties -= tie && keep;
  }
  out.resize(k);
  return out;
}

// k pair indices drawn uniformly without replacement from the P pairs that are
// not in `hard` (sorted), by Floyd's algorithm on the task's Philox stream; sorted.
// The drawn ranks live in a bitmap over the candidates when they are few, else
// in an open-addressing table (csrc/loss/pair_select.h, as on CUDA) and are sorted:
// the same set either way, no allocation per draw.
std::vector<int64_t> random_pairs(int64_t P, const std::vector<int64_t>& hard, int64_t k,
                                  uint64_t seed, int task) {
  const int64_t M = P - int64_t(hard.size());
  // The draws do not depend on each other: computed first, they overlap in
  // the pipeline (Philox is a chain of dependent multiplies).
  std::vector<int64_t> draws(k);
  for (int64_t i = 0; i < k; ++i) draws[i] = floyd_draw(seed, task, M - k + i);
  std::vector<int64_t> ranks;
  ranks.reserve(k);
  const int64_t words = (M + 63) / 64;
  if (words <= 4 * k + 1024) {
    // Few candidates: the set is a bitmap over the M ranks, read out in order
    // (no sort), for less than sorting the k ranks would cost.
    std::vector<uint64_t> taken(words, 0);
    for (int64_t i = 0; i < k; ++i) {
      int64_t r = draws[i];
      if (taken[r >> 6] >> (r & 63) & 1) r = M - k + i;
      taken[r >> 6] |= uint64_t(1) << (r & 63);
    }
    for (int64_t w = 0; w < words; ++w)
      for (uint64_t bits = taken[w]; bits; bits &= bits - 1)
        ranks.push_back(64 * w + __builtin_ctzll(bits));
  } else {
    const int64_t cap = hash_capacity(k);
    std::vector<int64_t> drawn(cap, -1);
    for (int64_t i = 0; i < k; ++i) {
      const int64_t j = M - k + i, r = draws[i];
      const int64_t pick = hash_insert(drawn.data(), cap, r) ? r : j;
      if (pick == j) hash_insert(drawn.data(), cap, j);
      ranks.push_back(pick);
    }
    std::sort(ranks.begin(), ranks.end());
  }
  // The r-th pair not in `hard` is r + (number of hard pairs before it).
  size_t h = 0;
  for (int64_t& r : ranks) {
    while (h < hard.size() && hard[h] <= r + int64_t(h)) ++h;
    r += int64_t(h);
  }
  return ranks;
}

// The pairs mining keeps for a task, sorted by (a, b): all of them when there
// are at most max_pairs, else the k_hard hardest and k_rand drawn uniformly
// from the rest.
std::vector<Pair> select_pairs(const LossParams& p, const TaskSamples& ts, int K,
                               int64_t max_pairs, double hard_fraction, uint64_t seed,
                               int task) {
  const int64_t n = ts.n();
  const int64_t P = n * (n - 1) / 2;
  if (P <= max_pairs) {
    std::vector<Pair> all;
    all.reserve(P);
    for (int a = 0; a < n; ++a)
      for (int b = a + 1; b < n; ++b) all.push_back({a, b});
    return all;
  }
  const int64_t k_hard = hard_pair_count(max_pairs, hard_fraction);
  // The table indexes pairs with int: never past INT32_MAX, whatever the cap.
  const std::vector<int64_t> hard = P <= std::min<int64_t>(mining_table_max_pairs(), INT32_MAX)
                                        ? hardest_pairs_table(p, ts, K, k_hard)
                                        : hardest_pairs(p, ts, K, k_hard);
  const std::vector<int64_t> drawn = random_pairs(P, hard, max_pairs - k_hard, seed, task);
  std::vector<int64_t> kept(hard.size() + drawn.size());
  std::merge(hard.begin(), hard.end(), drawn.begin(), drawn.end(), kept.begin());

  // Pair index -> (a, b), walking the rows once since `kept` is sorted.
  std::vector<Pair> pairs;
  pairs.reserve(kept.size());
  int64_t a = 0;
  for (const int64_t q : kept) {
    while (pair_row_offset(n, a + 1) <= q) ++a;
    pairs.push_back({int(a), int(a + 1 + (q - pair_row_offset(n, a)))});
  }
  return pairs;
}

template <PairFn F>
TaskLoss kept_pairs_loss(const LossParams& p, const TaskSamples& ts, int K,
                         const std::vector<Pair>& kept, double* g) {
  const double* s = ts.s.data();
  const int* y = ts.y.data();
  const double inv_km1 = 1.0 / double(K - 1);
  TaskLoss out;
  for (const Pair& q : kept) out.n_sim += y[q.a] == y[q.b];
  out.n_dis = int64_t(kept.size()) - out.n_sim;
  const double cd = dis_factor(p, out.n_dis, out.n_sim);
  const double cs = sim_factor(p, out.n_dis, out.n_sim);
  double sum_dis = 0.0, sum_sim = 0.0;
  for (const Pair& q : kept) {
    const double delta = s[q.a] - s[q.b];
    const int d = y[q.a] - y[q.b];
    double dl;  // d loss / d delta
    if (d == 0) {
      const PairTerm<double> term = similar_pair(delta);
      sum_sim += term.loss;
      dl = cs * term.dloss;
    } else {
      const double r = d > 0 ? 1.0 : -1.0;
      const PairTerm<double> term = ordinal_pair<double, F>(p, r * delta, grade_gap(d, inv_km1));
      sum_dis += term.loss;
      dl = cd * r * term.dloss;
    }
    g[q.a] += dl;
    g[q.b] -= dl;
  }
  out.loss = cd * sum_dis + cs * sum_sim;
  return out;
}

template <PairFn F>
TaskLoss task_loss(const LossParams& p, const TaskSamples& ts, int K, int64_t max_pairs,
                   double hard_fraction, uint64_t seed, int task, double* g, TaskScratch& scratch) {
  const int64_t n = ts.n();
  if (n < 2) return {};
  if (max_pairs == -1 || n * (n - 1) / 2 <= max_pairs) {
    if (F == PairFn::SquaredHinge && n >= sorted_pairs_min_n()) return sorted_hinge_loss(p, ts, K, g);
    return all_pairs_loss<F>(p, ts, K, g, scratch);
  }
  const std::vector<Pair> kept = select_pairs(p, ts, K, max_pairs, hard_fraction, seed, task);
  return kept_pairs_loss<F>(p, ts, K, kept, g);
}

uint64_t read_seed(int64_t max_pairs, const std::optional<at::Tensor>& seed) {
  if (max_pairs == -1) return 0;
  TORCH_CHECK_VALUE(seed->device().is_cpu(), "seed must be a CPU tensor for CPU inputs");
  return uint64_t(seed->item<int64_t>());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pairwise_rank_loss_cpu(
    const at::Tensor& scores, const at::Tensor& grades, c10::IntArrayRef num_grades,
    double scale, double margin_base, double margin_scale, double lambda_dis,
    double lambda_sim, bool severity_weight, c10::string_view pair_fn, double sigma,
    int64_t max_pairs, double hard_fraction, c10::string_view task_reduction,
    const std::optional<at::Tensor>& seed, c10::string_view pair_normalization) {
  check_scores_grades(scores, grades, num_grades);
  check_mining(max_pairs, hard_fraction, seed);
  const LossParams p = make_loss_params(scale, margin_base, margin_scale, lambda_dis,
                                        lambda_sim, severity_weight, pair_fn, sigma, pair_normalization);
  const TaskReduction reduction = parse_task_reduction(task_reduction);
  const uint64_t seed_value = read_seed(max_pairs, seed);

  const int64_t B = scores.size(0), T = scores.size(1);
  const at::Tensor s = scores.contiguous();
  const at::Tensor y = grades.contiguous();
  const std::vector<int64_t> n_valid = check_values(s, y, num_grades);
  // A task has pairs iff it has two valid samples (mining keeps >= 1 pair), so
  // the "mean" factor is known before any pair is visited.
  int64_t non_empty = 0;
  for (int64_t n : n_valid) non_empty += n >= 2;
  const double reduce_factor =
      reduction == TaskReduction::Mean ? 1.0 / double(std::max<int64_t>(1, non_empty)) : 1.0;

  at::Tensor pair_grad = at::empty({B, T}, scores.options());
  std::vector<TaskLoss> results(T);
  // One parallel region: each thread gathers, computes and writes back its tasks.
  at::parallel_for(0, T, task_grain(B, T, max_pairs != -1), [&](int64_t begin, int64_t end) {
    TaskScratch& scratch = task_scratch();
    const TaskSamples& ts = scratch.ts;
    for (int64_t t = begin; t < end; ++t) {
      gather_task(s, y, t, scratch.ts);
      std::vector<double>& g = scratch.g;
      g.assign(ts.n(), 0.0);
      const int K = int(num_grades[t]);
      results[t] = p.pair_fn == PairFn::SquaredHinge
                       ? task_loss<PairFn::SquaredHinge>(p, ts, K, max_pairs, hard_fraction,
                                                         seed_value, int(t), g.data(), scratch)
                       : task_loss<PairFn::Logistic>(p, ts, K, max_pairs, hard_fraction,
                                                     seed_value, int(t), g.data(), scratch);
      write_task_grad(pair_grad, ts, g, reduce_factor, t);
    }
  });

  at::Tensor counts = at::empty({T, 2}, scores.options().dtype(at::kLong));
  int64_t* cp = counts.data_ptr<int64_t>();
  std::vector<double> per_task(T);
  double total = 0.0;  // in task order: the sum does not depend on threads
  for (int64_t t = 0; t < T; ++t) {
    cp[2 * t] = results[t].n_dis;
    cp[2 * t + 1] = results[t].n_sim;
    per_task[t] = results[t].loss;
    total += results[t].loss;
  }
  // The loss in the scores' dtype, rounded from double as Tensor.to would.
  const bool by_task = reduction == TaskReduction::None;
  at::Tensor loss = at::empty(by_task ? c10::IntArrayRef{T} : c10::IntArrayRef{}, scores.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, loss.scalar_type(), "loss_out", [&] {
    scalar_t* lp = loss.data_ptr<scalar_t>();
    if (by_task) {
      for (int64_t t = 0; t < T; ++t) lp[t] = c10::convert<scalar_t>(per_task[t]);
    } else {
      *lp = c10::convert<scalar_t>(total * reduce_factor);
    }
  });
  return {loss, pair_grad, counts};
}
static_assert(std::is_same_v<decltype(pairwise_rank_loss_cpu), PairwiseRankLossSignature>);

at::Tensor mined_pairs_cpu(const at::Tensor& scores, const at::Tensor& grades,
                           c10::IntArrayRef num_grades, double margin_base, double margin_scale,
                           int64_t max_pairs, double hard_fraction,
                           const std::optional<at::Tensor>& seed) {
  check_scores_grades(scores, grades, num_grades);
  TORCH_CHECK_VALUE(max_pairs >= 1, "mined_pairs needs max_pairs >= 1, got ", max_pairs);
  check_mining(max_pairs, hard_fraction, seed);
  // Only the margin enters the hardness; the other parameters do not matter here.
  const LossParams p{1.0, margin_base, margin_scale, 1.0, 1.0, 1.0, true, PairFn::SquaredHinge};
  const uint64_t seed_value = read_seed(max_pairs, seed);

  const int64_t B = scores.size(0), T = scores.size(1);
  const at::Tensor s = scores.contiguous();
  const at::Tensor y = grades.contiguous();
  check_values(s, y, num_grades);
  at::Tensor out = at::full({T, max_pairs, 2}, -1, scores.options().dtype(at::kLong));
  int64_t* op = out.data_ptr<int64_t>();
  at::parallel_for(0, T, task_grain(B, T, true), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      TaskSamples ts;
      gather_task(s, y, t, ts);
      const std::vector<Pair> kept =
          select_pairs(p, ts, int(num_grades[t]), max_pairs, hard_fraction, seed_value, int(t));
      int64_t* row = op + t * max_pairs * 2;
      for (size_t k = 0; k < kept.size(); ++k) {
        row[2 * k] = ts.row[kept[k].a];
        row[2 * k + 1] = ts.row[kept[k].b];
      }
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sorted_hinge_generic_cpu(
    const at::Tensor& scores, const at::Tensor& grades, c10::IntArrayRef num_grades, double scale,
    double margin_base, double margin_scale, double lambda_dis, double lambda_sim,
    bool severity_weight, c10::string_view task_reduction, c10::string_view pair_normalization) {
  check_scores_grades(scores, grades, num_grades);
  const LossParams p = make_loss_params(scale, margin_base, margin_scale, lambda_dis, lambda_sim,
                                        severity_weight, "squared_hinge", 1.0, pair_normalization);
  return sorted_hinge_loss_generic(scores, grades, num_grades, p, parse_task_reduction(task_reduction),
                                   &sorted_rows_loop);
}

}  // namespace
}  // namespace spinerank

TORCH_LIBRARY_IMPL(spinerank_ext, CPU, m) {
  m.impl("_sorted_hinge_generic", &spinerank::sorted_hinge_generic_cpu);
  m.impl("pairwise_rank_loss", &spinerank::pairwise_rank_loss_cpu);
  m.impl("mined_pairs", &spinerank::mined_pairs_cpu);
}
