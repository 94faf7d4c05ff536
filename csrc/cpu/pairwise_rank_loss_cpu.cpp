// CPU kernels of pairwise_rank_loss and mined_pairs.
//
// Work is split over tasks: each task is computed start to finish by one thread,
// in a fixed order, so results do not depend on the number of threads. Scores
// are accumulated in double whatever their dtype. No (B, B) or pair-list tensor
// is allocated: one pass over a task's pairs accumulates the loss, the pair
// counts and the per-sample gradient; large squared-hinge tasks take the
// sorted path instead (csrc/loss/tuning.h). Mining's pair selection is in
// pair_selection_cpu.cpp, gathering and grouping in task_samples.cpp.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <c10/util/TypeCast.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/pair_selection.h"
#include "cpu/task_samples.h"
#include "loss/args.h"
#include "loss/check_values.h"
#include "loss/pair_math.h"
#include "loss/sorted_pairs.h"
#include "loss/tuning.h"

namespace spinerank::cpu {
namespace {

// One task as the sorted path's single row (SortedRows with T = 1).
struct SortedScratch {
  std::vector<double> s, x, cum1, cum2, g, l;
  std::vector<int64_t> y, start, gval;
  std::vector<int8_t> bad;
  void resize(int n, int groups) {
    for (std::vector<double>* v : {&s, &x, &cum1, &cum2, &g, &l}) v->resize(n);
    y.resize(n);
    bad.resize(n);
    start.resize(groups + 2);
    gval.assign(groups + 1, 0);
  }
};

// Per-thread buffers of the all-pairs path, kept between calls: at B = 32 a
// task's pair arithmetic takes a few hundred ns, and a dozen fresh vectors
// per task cost as much again (they hold O(B) entries, and are kept at the
// largest size a thread has seen).
struct TaskScratch {
  TaskSamples ts;
  GradeGroups gg;
  std::vector<double> g, gs;
  SortedScratch sorted;
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
    for (int k = lo; k < hi; ++k) {
      const PairTerm<double> sim = similar_group_share(m, s[k] - mean);
      sum_sim += sim.loss;
      gs[k] += cs * sim.dloss;
    }
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
// pairs: the task as one sorted row of csrc/loss/sorted_pairs.h (each grade
// group sorted by score, scores centred on the task mean, prefix sums along
// the row) and each position's terms from sorted_hinge_row, the function the
// CUDA sorted path runs. O(G^2 n log n) time, O(n) memory.
TaskLoss sorted_hinge_loss(const LossParams& p, const TaskSamples& ts, int K, double* g,
                           TaskScratch& scratch) {
  const int n = ts.n();
  GradeGroups& gg = scratch.gg;
  group_by_grade(ts, gg);
  const int G = gg.count();
  SortedScratch& r = scratch.sorted;
  r.resize(n, G);
  TaskLoss out;
  double mean = 0.0;
  for (int a = 0; a < n; ++a) mean += ts.s[a];
  mean /= n;
  for (int c = 0; c < G; ++c) {
    // Equal scores may land in any order: only sums over runs are used, and
    // the violation test never splits equal scores.
    std::sort(gg.pos.begin() + gg.start[c], gg.pos.begin() + gg.start[c + 1],
              [&](int u, int v) { return ts.s[u] < ts.s[v]; });
    r.start[c] = gg.start[c];
    r.gval[c] = gg.grade[c];
    for (int k = gg.start[c]; k < gg.start[c + 1]; ++k) r.y[k] = c;
    out.n_sim += int64_t(gg.size(c)) * (gg.size(c) - 1) / 2;
  }
  r.start[G] = r.start[G + 1] = n;  // no missing samples: the last group is empty
  out.n_dis = int64_t(n) * (n - 1) / 2 - out.n_sim;
  double cum1 = 0.0, cum2 = 0.0;
  for (int k = 0; k < n; ++k) {
    r.s[k] = ts.s[gg.pos[k]];
    r.x[k] = r.s[k] - mean;
    r.cum1[k] = cum1 += r.x[k];
    r.cum2[k] = cum2 += r.x[k] * r.x[k];
  }
  const int64_t groups = G, k_t = K;
  const SortedRows rows{r.s.data(), r.x.data(), r.cum1.data(), r.cum2.data(), r.y.data(),
                        r.start.data(), r.gval.data(), &groups, &k_t, &out.n_dis, &out.n_sim,
                        r.g.data(), r.l.data(), r.bad.data(), n, 1, G};
  for (int k = 0; k < n; ++k) sorted_hinge_row(rows, p, 0, k);
  for (int k = 0; k < n; ++k) {
    out.loss += r.l[k];
    g[gg.pos[k]] += r.g[k];
  }
  return out;
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
    if (F == PairFn::SquaredHinge && n >= sorted_pairs_min_n()) return sorted_hinge_loss(p, ts, K, g, scratch);
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

}  // namespace
}  // namespace spinerank::cpu

TORCH_LIBRARY_IMPL(spinerank_ext, CPU, m) {
  m.impl("pairwise_rank_loss", &spinerank::cpu::pairwise_rank_loss_cpu);
  m.impl("mined_pairs", &spinerank::cpu::mined_pairs_cpu);
}
