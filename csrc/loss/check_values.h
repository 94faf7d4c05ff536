// The value checks of pairwise_rank_loss that need the data: grades in range
// and finite scores. The CPU kernel runs them on every call; the CUDA entry
// runs them on a host copy when SPINERANK_EXT_SYNC_CHECKS=1 (the CUDA kernels
// themselves turn such a task's loss and gradient into NaN, without a host
// synchronisation).
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <vector>

namespace spinerank {

// Rejects non-finite scores and out-of-range grades, naming row, task and value,
// and counts each task's valid samples. Serial and in batch order, so the first
// offending entry is always the one reported.
inline std::vector<int64_t> check_values(const at::Tensor& scores, const at::Tensor& grades,
                                         c10::IntArrayRef num_grades) {
  const int64_t B = scores.size(0), T = scores.size(1);
  std::vector<int64_t> n_valid(T, 0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "check_values", [&] {
    using scalar_t_ = scalar_t;
    AT_DISPATCH_INDEX_TYPES(grades.scalar_type(), "check_values_grades", [&] {
      const scalar_t_* sp = scores.const_data_ptr<scalar_t_>();
      const index_t* yp = grades.const_data_ptr<index_t>();
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t t = 0; t < T; ++t) {
          const int64_t grade = yp[b * T + t];
          if (grade < 0) continue;  // missing
          TORCH_CHECK_VALUE(grade < num_grades[t], "grade ", grade, " at row ", b, ", task ", t,
                            " is out of range: task ", t, " has K = ", num_grades[t],
                            " grades (0..", num_grades[t] - 1, "; negative = missing)");
          const double score = double(sp[b * T + t]);
          TORCH_CHECK_VALUE(std::isfinite(score), "scores must be finite: got ", score,
                            " at row ", b, ", task ", t);
          ++n_valid[t];
        }
      }
    });
  });
  return n_valid;
}

}  // namespace spinerank
