// Argument checks and parsing of the pairwise_rank_loss op family, shared by the
// CPU and CUDA entry points: the last line, for calls through torch.ops. The
// public API and the fake kernels check first (spinerank_ext/_validate.py),
// with the same key phrase per problem. Value checks that need the data
// (finite scores, grade range) are done by each backend (check_values.h).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <optional>
#include <string_view>
#include <tuple>

#include "loss/pair_math.h"

namespace spinerank {

// The C++ signature of spinerank_ext::pairwise_rank_loss (schema: csrc/ops.cpp).
using PairwiseRankLossSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor& scores, const at::Tensor& grades, c10::IntArrayRef num_grades,
    double scale, double margin_base, double margin_scale, double lambda_dis,
    double lambda_sim, bool severity_weight, c10::string_view pair_fn, double sigma,
    int64_t max_pairs, double hard_fraction, c10::string_view task_reduction,
    const std::optional<at::Tensor>& seed, c10::string_view pair_normalization);

enum class TaskReduction : int { Mean = 0, Sum = 1, None = 2 };

// The largest number of grades K of a task (MAX_NUM_GRADES in
// spinerank_ext/_validate.py): the kernels store grades 0..K-1 as int32. K
// enters the formulas only (margins and weights scale with 1 / (K - 1)); time
// and memory depend on the grades that occur.
constexpr int64_t kMaxNumGrades = INT32_MAX;

inline PairFn parse_pair_fn(std::string_view s) {
  if (s == "squared_hinge") return PairFn::SquaredHinge;
  if (s == "logistic") return PairFn::Logistic;
  TORCH_CHECK_VALUE(false, "pair_fn must be 'squared_hinge' or 'logistic', got '", s, "'");
}

inline TaskReduction parse_task_reduction(std::string_view s) {
  if (s == "mean") return TaskReduction::Mean;
  if (s == "sum") return TaskReduction::Sum;
  if (s == "none") return TaskReduction::None;
  TORCH_CHECK_VALUE(false, "task_reduction must be 'mean', 'sum' or 'none', got '", s, "'");
}

inline void check_scores_grades(const at::Tensor& scores, const at::Tensor& grades,
                                c10::IntArrayRef num_grades) {
  TORCH_CHECK_VALUE(scores.dim() == 2, "scores must have shape (B, T), got ", scores.dim(),
                    " dimension(s) ", scores.sizes());
  TORCH_CHECK_VALUE(grades.sizes() == scores.sizes(), "grades must have the shape of scores ",
                    scores.sizes(), ", got ", grades.sizes());
  TORCH_CHECK_VALUE(at::isFloatingType(scores.scalar_type()),
                    "scores must be a floating tensor, got ", scores.scalar_type());
  TORCH_CHECK_VALUE(grades.scalar_type() == at::kLong || grades.scalar_type() == at::kInt,
                    "grades must be an int64 or int32 tensor, got ", grades.scalar_type());
  TORCH_CHECK_VALUE(grades.device() == scores.device(),
                    "scores and grades must be on the same device, got ", scores.device(),
                    " and ", grades.device());
  TORCH_CHECK_VALUE(int64_t(num_grades.size()) == scores.size(1), "num_grades has ",
                    num_grades.size(), " entries but scores has T = ", scores.size(1), " tasks");
  // Every K is checked as the int64 it arrives as, before any use.
  for (size_t t = 0; t < num_grades.size(); ++t) {
    TORCH_CHECK_VALUE(num_grades[t] >= 2, "num_grades[", t, "] = ", num_grades[t],
                      ": every task needs K >= 2 grades");
    TORCH_CHECK_VALUE(num_grades[t] <= kMaxNumGrades, "num_grades[", t, "] = ", num_grades[t],
                      " exceeds the maximum K = ", kMaxNumGrades, " (grades are stored as int32)");
  }
  TORCH_CHECK_VALUE(scores.size(0) <= INT32_MAX, "batch size ", scores.size(0), " is too large");
}

inline void check_mining(int64_t max_pairs, double hard_fraction,
                         const std::optional<at::Tensor>& seed) {
  TORCH_CHECK_VALUE(max_pairs == -1 || max_pairs >= 1,
                    "max_pairs must be -1 (all pairs) or >= 1, got ", max_pairs);
  TORCH_CHECK_VALUE(hard_fraction >= 0.0 && hard_fraction <= 1.0,
                    "hard_fraction must be in [0, 1], got ", hard_fraction);
  if (max_pairs != -1) {
    TORCH_CHECK_VALUE(seed.has_value() && seed->numel() == 1 && seed->scalar_type() == at::kLong,
                      "mining (max_pairs != -1) needs seed, an int64 tensor with one element");
  }
}

inline PairNormalization parse_pair_normalization(std::string_view s) {
  if (s == "per_kind") return PairNormalization::PerKind;
  if (s == "all") return PairNormalization::All;
  TORCH_CHECK_VALUE(false, "pair_normalization must be 'per_kind' or 'all', got '", s, "'");
}

inline LossParams make_loss_params(double scale, double margin_base, double margin_scale,
                                   double lambda_dis, double lambda_sim, bool severity_weight,
                                   std::string_view pair_fn, double sigma,
                                   std::string_view pair_normalization = "per_kind") {
  const PairFn fn = parse_pair_fn(pair_fn);
  TORCH_CHECK_VALUE(fn != PairFn::Logistic || sigma > 0.0, "sigma must be > 0, got ", sigma);
  return {scale,     margin_base,     margin_scale, lambda_dis,
          lambda_sim, sigma,          severity_weight, fn,
          parse_pair_normalization(pair_normalization)};
}

}  // namespace spinerank
