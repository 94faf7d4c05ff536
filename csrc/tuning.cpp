// The private ops of spinerank_ext, in one schema fragment: the path
// thresholds of csrc/loss/tuning.h, which tests move to run both paths on one
// input and benchmarks move to time each, and the CUDA sorted path run on the
// CPU for tests. None is part of the public API.
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <atomic>

#include "loss/args.h"
#include "loss/sorted_pairs_generic.h"
#include "loss/tuning.h"

namespace spinerank {
namespace {

std::atomic<int64_t> sorted_pairs_threshold{kSortedPairsMinN};
std::atomic<int64_t> mining_table_cap{kMiningTableMaxPairs};
std::atomic<int64_t> cuda_sorted_batch{kCudaSortedMinBatch};

// Sets the value (n >= 0) and returns the previous one; n < 0 only reads it.
int64_t exchange(std::atomic<int64_t>& value, int64_t n) { return n < 0 ? value.load() : value.exchange(n); }

int64_t exchange_sorted_pairs_min_n(int64_t n) { return exchange(sorted_pairs_threshold, n); }
int64_t exchange_mining_table_max_pairs(int64_t n) { return exchange(mining_table_cap, n); }
int64_t exchange_cuda_sorted_min_batch(int64_t b) { return exchange(cuda_sorted_batch, b); }

// The CUDA backend's sorted all-pairs path with its per-row pass run as a CPU
// loop: the whole device path except the kernel launch, tested without a GPU.
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

int64_t sorted_pairs_min_n() { return sorted_pairs_threshold.load(std::memory_order_relaxed); }
int64_t mining_table_max_pairs() { return mining_table_cap.load(std::memory_order_relaxed); }

}  // namespace spinerank

TORCH_LIBRARY_FRAGMENT(spinerank_ext, m) {
  // The smallest task (valid samples) that takes the sorted all-pairs path on
  // CPU; sets it when n >= 0 and returns the previous value.
  m.def("_sorted_pairs_min_n(int n) -> int", &spinerank::exchange_sorted_pairs_min_n);
  // The largest task (pairs) whose hardest pairs mining selects from a table
  // of every pair's hardness on CPU; same convention.
  m.def("_mining_table_max_pairs(int n) -> int", &spinerank::exchange_mining_table_max_pairs);
  // The smallest batch that takes the sorted all-pairs path on CUDA; same
  // convention. Read by the CUDA library through this op.
  m.def("_cuda_sorted_min_batch(int b) -> int", &spinerank::exchange_cuda_sorted_min_batch);
  // The CUDA backend's sorted all-pairs path (squared hinge) with its per-row
  // pass run as a CPU loop (csrc/loss/sorted_pairs_generic.h). CPU only; no
  // autograd; bad values give NaN instead of raising.
  m.def("_sorted_hinge_generic(Tensor scores, Tensor grades, int[] num_grades, float scale, "
        "float margin_base, float margin_scale, float lambda_dis, float lambda_sim, bool severity_weight, "
        "str task_reduction, str pair_normalization=\"per_kind\") -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(spinerank_ext, CPU, m) {
  m.impl("_sorted_hinge_generic", &spinerank::sorted_hinge_generic_cpu);
}
