// The sorted all-pairs squared-hinge loss (csrc/loss/sorted_pairs.h) from
// device-generic ATen ops (sort, cumsum, gather, scatter) and one pass over
// the sorted rows, sorted_hinge_row, which the caller runs: a CUDA kernel in
// the CUDA backend (its path for large batches), a loop on the CPU. On the CPU
// it is the private op spinerank_ext::_sorted_hinge_generic, so the whole
// device path except the kernel launch is tested without a GPU against the CPU
// kernels. Header-only: the CUDA library does not link the CPU one.
//
// No host synchronisation (K_t reaches the rows through a tensor built on the
// device, no value is read back), so it can be captured in a CUDA graph. Bad
// values (a grade >= K_t, a non-finite score) make the task's loss and
// gradient NaN, as in the CUDA kernels.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <tuple>

#include "loss/pair_math.h"
#include "loss/args.h"
#include "loss/sorted_pairs.h"

namespace spinerank {

// Runs sorted_hinge_row for every (t, k), t < T, k < B.
using SortedRowsLauncher = void (*)(const SortedRows& rows, const LossParams& p);

inline void sorted_rows_loop(const SortedRows& rows, const LossParams& p) {
  for (int64_t t = 0; t < rows.T; ++t)
    for (int64_t k = 0; k < rows.B; ++k) sorted_hinge_row(rows, p, t, k);
}

// The op's (loss, pair_grad, counts) from the rows' per-position loss shares l
// and gradients g (T, B, in sorted order perm): a task with bad values is NaN.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> sorted_rows_result(
    const at::Tensor& scores, TaskReduction reduction, const at::Tensor& l, const at::Tensor& g,
    const at::Tensor& perm, const at::Tensor& bad_task, const at::Tensor& n, const at::Tensor& n_dis,
    const at::Tensor& n_sim) {
  const int64_t B = scores.size(0), T = scores.size(1);
  const auto f64 = scores.options().dtype(at::kDouble);
  const at::Tensor nan = at::full({}, std::numeric_limits<double>::quiet_NaN(), f64);
  const at::Tensor task_loss = at::where(bad_task, nan, l.sum(1));  // (T,)
  const at::Tensor has_pairs = n.ge(2);
  const at::Tensor factor = reduction == TaskReduction::Mean
                                ? 1.0 / has_pairs.sum().clamp_min(1).to(at::kDouble)
                                : at::ones({}, f64);
  at::Tensor grad = at::zeros({T, B}, f64).scatter_(1, perm, g * factor);
  grad = at::where(bad_task.unsqueeze(1), nan, grad);
  at::Tensor loss = reduction == TaskReduction::None ? task_loss : task_loss.sum() * factor;
  return {loss.to(scores.scalar_type()), grad.t().to(scores.scalar_type()).contiguous(),
          at::stack({n_dis, n_sim}, 1).contiguous()};
}

// (loss, pair_grad, counts) as the pairwise_rank_loss kernels return them
// (all pairs, squared hinge).
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> sorted_hinge_loss_generic(
    const at::Tensor& scores, const at::Tensor& grades, c10::IntArrayRef num_grades,
    const LossParams& p, TaskReduction reduction, SortedRowsLauncher launch) {
  const int64_t B = scores.size(0), T = scores.size(1);
  int64_t kmax = 2;
  for (const int64_t k : num_grades) kmax = std::max(kmax, k);
  // Groups per task: the grades present, at most min(K, B) of them. A host
  // bound, so no value is read back; never K-sized beyond B.
  const int64_t gcap = std::max<int64_t>(1, std::min(kmax, B));
  const auto dev = scores.device();
  const auto f64 = scores.options().dtype(at::kDouble);
  const auto i64 = scores.options().dtype(at::kLong);
  const int64_t missing_key = std::numeric_limits<int64_t>::max();

  // K_t on the device without a host-to-device copy: one fill per distinct K.
  at::Tensor ks = at::empty({T}, i64);
  for (int64_t t = 0; t < T; ++t) ks.narrow(0, t, 1).fill_(num_grades[t]);

  const at::Tensor S = scores.t().to(at::kDouble).contiguous();  // (T, B)
  const at::Tensor Y = grades.t().to(at::kLong).contiguous();
  const at::Tensor valid = Y.ge(0);
  const at::Tensor score = at::where(valid, S, at::zeros({}, f64));  // missing: 0, never NaN
  // A grade >= K_t makes its task NaN (its groups may then be merged below).
  const at::Tensor bad_grade = Y.ge(ks.unsqueeze(1)).any(1);
  // Sort key: the grade, missing samples last.
  const at::Tensor key = at::where(valid, Y, at::full({}, missing_key, i64));
  // Sorted by (grade, score): by score, then stably by grade.
  const at::Tensor by_score = std::get<1>(at::sort(score, /*stable=*/true, 1, false));
  const at::Tensor by_key = std::get<1>(at::sort(key.gather(1, by_score), /*stable=*/true, 1, false));
  const at::Tensor perm = by_score.gather(1, by_key);
  const at::Tensor s_sorted = score.gather(1, perm).contiguous();
  const at::Tensor key_sorted = key.gather(1, perm);
  // Group: the rank of the grade among the task's grades present (a new group
  // starts where the sorted grade changes), clamped to gcap - 1 (only a task
  // with bad grades can have more); missing samples: gcap.
  at::Tensor rank = at::zeros({T, B}, i64);
  if (B > 1) {
    rank.narrow(1, 1, B - 1)
        .copy_(key_sorted.narrow(1, 1, B - 1).ne(key_sorted.narrow(1, 0, B - 1)).cumsum(1, at::kLong));
  }
  const at::Tensor y_sorted =
      at::where(key_sorted.ne(missing_key), rank.clamp_max(gcap - 1), at::full({}, gcap, i64)).contiguous();

  const at::Tensor counts = at::zeros({T, gcap + 1}, i64).scatter_add_(1, y_sorted, at::ones_like(y_sorted));
  const at::Tensor start = at::cat({at::zeros({T, 1}, i64), counts.cumsum(1)}, 1).contiguous();
  // The grade of each group (every member writes the same value, except in a
  // task with bad grades, whose result is NaN anyway).
  const at::Tensor gval = at::zeros({T, gcap + 1}, i64).scatter_(1, y_sorted, key_sorted).contiguous();
  const at::Tensor ngroups = counts.narrow(1, 0, gcap).gt(0).sum(1).contiguous();
  const at::Tensor n = valid.sum(1);
  const at::Tensor mean = score.sum(1) / n.clamp_min(1).to(at::kDouble);
  const at::Tensor x = at::where(y_sorted.lt(gcap), s_sorted - mean.unsqueeze(1), at::zeros({}, f64)).contiguous();
  const at::Tensor cum1 = x.cumsum(1).contiguous();
  const at::Tensor cum2 = (x * x).cumsum(1).contiguous();
  const at::Tensor m = counts.narrow(1, 0, gcap);
  const at::Tensor n_sim = (m * (m - 1)).div(2, "floor").sum(1);
  const at::Tensor n_dis = (n * (n - 1)).div(2, "floor") - n_sim;

  at::Tensor g = at::empty({T, B}, f64), l = at::empty({T, B}, f64);
  at::Tensor bad = at::empty({T, B}, scores.options().dtype(at::kChar));
  if (B > 0 && T > 0) {
    const SortedRows rows{s_sorted.const_data_ptr<double>(), x.const_data_ptr<double>(),
                          cum1.const_data_ptr<double>(), cum2.const_data_ptr<double>(),
                          y_sorted.const_data_ptr<int64_t>(), start.const_data_ptr<int64_t>(),
                          gval.const_data_ptr<int64_t>(), ngroups.const_data_ptr<int64_t>(),
                          ks.const_data_ptr<int64_t>(), n_dis.const_data_ptr<int64_t>(),
                          n_sim.const_data_ptr<int64_t>(), g.mutable_data_ptr<double>(),
                          l.mutable_data_ptr<double>(), bad.mutable_data_ptr<int8_t>(), B, T, gcap};
    launch(rows, p);
  }
  const at::Tensor bad_task = bad.ne(0).any(1).logical_or(bad_grade);
  return sorted_rows_result(scores, reduction, l, g, perm, bad_task, n, n_dis, n_sim);
}

}  // namespace spinerank
