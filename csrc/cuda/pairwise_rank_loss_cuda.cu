// CUDA kernels of pairwise_rank_loss and mined_pairs (SPEC §3): the loss
// paths and the entries.
//
// Same per-pair math as the CPU kernels (pair_math.h) and the same pair
// selection, bit for bit: mining ranks pairs by a double hardness rounded
// operation by operation, and the random part replays the CPU's Floyd draws
// from the same Philox stream. Deterministic: every floating-point sum runs in
// a fixed order (per-thread loops, fixed-shape block reductions, a final
// reduction in task and block order); the only atomics are on integers.
// No host synchronisation: the seed may live on the device, K_t travels as a
// kernel argument, and bad values (a grade >= K_t, a non-finite score) make
// that task's loss and gradient NaN instead of raising (the CPU messages are
// available with SPINERANK_EXT_SYNC_CHECKS=1).
//
// All pairs (max_pairs = -1), one kernel: block (chunk, t) owns 256 batch rows
// of task t and streams the task's whole column through shared memory. Each
// thread sums its row's gradient over every partner, so each pair is evaluated
// twice (once per side) and no gradient needs an atomic; the loss of a pair is
// counted by its left row. The block also histograms the column's grades, which
// gives the pair counts that normalise the gradient. The last block to finish
// reduces the per-block loss partials.
//
// Mining (select and kept_grad) is in pair_selection_cuda.cu, the workspace and
// what the kernels share in loss_workspace.cuh.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <cub/block/block_reduce.cuh>

#include <limits>

#include "cuda/loss_workspace.cuh"
#include "cuda/pair_selection.cuh"
#include "loss/pair_math.h"
#include "loss/args.h"
#include "loss/check_values.h"
#include "loss/sorted_pairs_generic.h"

namespace spinerank::cuda {
namespace {

// Tasks with at least two non-missing grades: the divisor of task_reduction
// "mean". Usually settled by each column's first rows, so every block can
// afford to recompute it. Needs the whole block; returns the same value in
// every thread.
__device__ int count_tasks_with_pairs(const void* grades, bool wide, int64_t B, int T,
                                      int* shared_count) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (threadIdx.x == 0) *shared_count = 0;
  __syncthreads();
  for (int u = warp; u < T; u += warps) {
    int found = 0;  // warp-uniform: it comes from a ballot
    for (int64_t base = 0; base < B && found < 2; base += 32) {
      const int64_t b = base + lane;
      const bool valid = b < B && load_grade(grades, b * T + u, wide) >= 0;
      found += __popc(__ballot_sync(0xffffffffu, valid));
    }
    if (lane == 0 && found >= 2) atomicAdd(shared_count, 1);
  }
  __syncthreads();
  return *shared_count;
}

// ---------------------------------------------------------------------------
// All pairs. The kernel's steps are force-inlined device functions, called by
// the whole block where they hold a barrier (publish_partials).

// Task t's column of the (B, T) inputs, with its K_t.
template <typename scalar_t>
struct TaskColumn {
  const scalar_t* scores;
  const void* grades;
  bool wide_grades;
  int64_t B;
  int T, t, K;
};

// This thread's row a of the column: its score, and its grade or -1 when it
// is missing, invalid or past the end.
template <typename acc_t>
struct RowSample {
  int y;
  acc_t s;
};

template <typename acc_t, typename scalar_t>
__device__ __forceinline__ RowSample<acc_t> load_row(const TaskColumn<scalar_t>& col, int64_t a) {
  int y_a = -1;
  acc_t s_a = 0;
  if (a < col.B) {
    const int64_t y = load_grade(col.grades, a * col.T + col.t, col.wide_grades);
    s_a = static_cast<acc_t>(col.scores[a * col.T + col.t]);
    if (y >= 0 && y < col.K && isfinite(s_a)) y_a = int(y);
  }
  return {y_a, s_a};
}

// Stages column rows base .. base + kRowThreads - 1 in the tile, one per
// thread (grade -1: missing, invalid or past the end), and counts their grades
// into grade_count and top_grade (the largest grade seen); a bad value (a grade
// >= K, a non-finite score) sets bad_seen.
template <typename acc_t, typename scalar_t>
__device__ __forceinline__ void stage_tile(const TaskColumn<scalar_t>& col, int64_t base, acc_t* tile_s,
                                           int* tile_y, int* grade_count, int* top_grade, int* bad_seen) {
  const int64_t b = base + threadIdx.x;
  int y_b = -1;
  acc_t s_b = 0;
  if (b < col.B) {
    const int64_t y = load_grade(col.grades, b * col.T + col.t, col.wide_grades);
    if (y >= 0) {
      s_b = static_cast<acc_t>(col.scores[b * col.T + col.t]);
      if (y < col.K && isfinite(s_b)) {
        y_b = int(y);
        atomicAdd(&grade_count[y_b], 1);  // integer: the counts do not depend on order
        atomicMax(top_grade, y_b);
      } else {
        *bad_seen = 1;  // every writer stores the same value
      }
    }
  }
  tile_s[threadIdx.x] = s_b;
  tile_y[threadIdx.x] = y_b;
}

// A row's sums over its partners: the gradient of every pair (ordinal,
// similar) and the loss of the pairs it is the left row of.
template <typename acc_t>
struct RowSums {
  acc_t g_dis, g_sim, l_dis, l_sim;
};

// Row a's sums (a valid sample) plus its pairs with the staged rows base ..
// base + kRowThreads - 1 that exist. The sums travel by value: with them
// behind a reference, nvcc fused fewer of the loop's multiply-adds (nvcc
// contracts a * b + c by default), which would change the rounding.
template <typename acc_t, PairFn F>
__device__ __forceinline__ RowSums<acc_t> add_tile_pairs(const LossParams& p, RowSample<acc_t> row, int64_t a,
                                                         int64_t B, int64_t base, const acc_t* tile_s,
                                                         const int* tile_y, acc_t inv_km1, RowSums<acc_t> sums) {
  acc_t g_dis = sums.g_dis, g_sim = sums.g_sim, l_dis = sums.l_dis, l_sim = sums.l_sim;
  const int m = int(B - base < kRowThreads ? B - base : kRowThreads);
  for (int j = 0; j < m; ++j) {
    const int y_j = tile_y[j];
    if (y_j < 0) continue;  // the same j for the whole warp: no divergence
    const acc_t delta = row.s - tile_s[j];
    const int d = row.y - y_j;
    const bool counts_loss = base + j > a;  // a pair's loss is counted by its left row
    if (d == 0) {
      // The self pair (j = a) adds 0 here and is not counted.
      const PairTerm<acc_t> o = similar_pair(delta);
      g_sim += o.dloss;
      if (counts_loss) l_sim += o.loss;
    } else {
      const PairTerm<acc_t> o = ordinal_pair<acc_t, F>(p, d > 0 ? delta : -delta, grade_gap(d, inv_km1));
      g_dis += d > 0 ? o.dloss : -o.dloss;
      if (counts_loss) l_dis += o.loss;
    }
  }
  return {g_dis, g_sim, l_dis, l_sim};
}

// The task's sample and pair counts from its grade histogram.
struct PairCounts {
  int64_t n_valid, n_dis, n_sim;
};

__device__ __forceinline__ PairCounts grade_pair_counts(const int* grade_count, int top_grade) {
  int64_t n = 0, n_sim = 0;
  for (int c = 0; c <= top_grade; ++c) {  // the grades that occur, not K
    const int64_t m = grade_count[c];
    n += m;
    n_sim += m * (m - 1) / 2;
  }
  return {n, n * (n - 1) / 2 - n_sim, n_sim};
}

// The block's loss partials into the workspace, and (block 0) the task's
// counts; then thread 0 takes a ticket: is_last tells whether this block
// finished last. Needs the whole block.
template <typename acc_t>
__device__ __forceinline__ void publish_partials(typename cub::BlockReduce<acc_t, kRowThreads>::TempStorage& storage,
                                                 const RowSums<acc_t>& sums, PairCounts counts, bool bad,
                                                 const Workspace& ws, int t, int chunks, int* is_last) {
  using BlockReduce = cub::BlockReduce<acc_t, kRowThreads>;
  const acc_t block_dis = BlockReduce(storage).Sum(sums.l_dis);
  __syncthreads();
  const acc_t block_sim = BlockReduce(storage).Sum(sums.l_sim);
  if (threadIdx.x == 0) {
    double* partial = ws.partials + (int64_t(t) * chunks + blockIdx.x) * 2;
    partial[0] = double(block_dis);
    partial[1] = double(block_sim);
    if (blockIdx.x == 0) {
      ws.task_info[4 * t + kInfoDis] = counts.n_dis;
      ws.task_info[4 * t + kInfoSim] = counts.n_sim;
      ws.task_info[4 * t + kInfoValid] = counts.n_valid;
      ws.task_info[4 * t + kInfoBad] = bad;
    }
    __threadfence();  // publish the partials before taking a ticket
    const unsigned int ticket = atomicAdd(ws.done, 1u);
    *is_last = ticket == gridDim.x * gridDim.y - 1;
  }
}

// The last block: per-task loss from the partials, one warp per task, lanes
// over chunks in a fixed order, then a fixed butterfly.
__device__ __forceinline__ void reduce_partials(const LossParams& p, const Workspace& ws, int T, int chunks) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int u = warp; u < T; u += warps) {
    double sum_dis = 0.0, sum_sim = 0.0;
    for (int c = lane; c < chunks; c += 32) {
      sum_dis += __ldcg(ws.partials + (int64_t(u) * chunks + c) * 2);
      sum_sim += __ldcg(ws.partials + (int64_t(u) * chunks + c) * 2 + 1);
    }
    for (int offset = 16; offset > 0; offset /= 2) {
      sum_dis += __shfl_xor_sync(0xffffffffu, sum_dis, offset);
      sum_sim += __shfl_xor_sync(0xffffffffu, sum_sim, offset);
    }
    if (lane == 0) {
      const int64_t u_dis = __ldcg(ws.task_info + 4 * u + kInfoDis);
      const int64_t u_sim = __ldcg(ws.task_info + 4 * u + kInfoSim);
      ws.task_loss[u] = dis_factor(p, u_dis, u_sim) * sum_dis + sim_factor(p, u_dis, u_sim) * sum_sim;
    }
  }
}

template <typename scalar_t, PairFn F>
__global__ void __launch_bounds__(kRowThreads) all_pairs_kernel(
    const scalar_t* __restrict__ scores, const void* __restrict__ grades, bool wide_grades,
    int64_t B, int T, TaskGrades ks, LossParams p, TaskReduction reduction, Workspace ws,
    scalar_t* __restrict__ pair_grad, scalar_t* __restrict__ loss_out,
    int64_t* __restrict__ counts_out) {
  using acc_t = typename AccType<scalar_t>::type;
  using BlockReduce = cub::BlockReduce<acc_t, kRowThreads>;
  __shared__ typename BlockReduce::TempStorage reduce_storage;
  __shared__ acc_t tile_s[kRowThreads];
  __shared__ int tile_y[kRowThreads];
  __shared__ int bad_seen, tasks_count, is_last, top_grade;
  __shared__ int64_t n_dis_shared, n_sim_shared, n_valid_shared;
  extern __shared__ int grade_count[];  // (K_t,); counted up to the largest grade seen

  const int t = blockIdx.y;
  const int K = ks.k[t];
  const int chunks = gridDim.x;
  const int64_t a = int64_t(blockIdx.x) * kRowThreads + threadIdx.x;
  for (int c = threadIdx.x; c < K; c += blockDim.x) grade_count[c] = 0;
  if (threadIdx.x == 0) {
    bad_seen = 0;
    top_grade = -1;
  }
  __syncthreads();
  const int tasks_with_pairs =
      reduction == TaskReduction::Mean ? count_tasks_with_pairs(grades, wide_grades, B, T, &tasks_count) : 1;

  const TaskColumn<scalar_t> col{scores, grades, wide_grades, B, T, t, K};
  const RowSample<acc_t> row = load_row<acc_t>(col, a);
  const acc_t inv_km1 = acc_t(1) / acc_t(K - 1);
  RowSums<acc_t> sums{0, 0, 0, 0};
  for (int64_t base = 0; base < B; base += kRowThreads) {
    stage_tile(col, base, tile_s, tile_y, grade_count, &top_grade, &bad_seen);
    __syncthreads();
    if (row.y >= 0) sums = add_tile_pairs<acc_t, F>(p, row, a, B, base, tile_s, tile_y, inv_km1, sums);
    __syncthreads();
  }

  if (threadIdx.x == 0) {
    const PairCounts c = grade_pair_counts(grade_count, top_grade);
    n_valid_shared = c.n_valid;
    n_sim_shared = c.n_sim;
    n_dis_shared = c.n_dis;
  }
  __syncthreads();
  const PairCounts counts{n_valid_shared, n_dis_shared, n_sim_shared};
  const bool bad = bad_seen != 0;
  if (a < B) {
    const acc_t cd = acc_t(dis_factor(p, counts.n_dis, counts.n_sim));
    const acc_t cs = acc_t(sim_factor(p, counts.n_dis, counts.n_sim));
    const acc_t rf = acc_t(1.0 / double(tasks_with_pairs > 1 ? tasks_with_pairs : 1));
    const acc_t g = row.y >= 0 ? (cd * sums.g_dis + cs * sums.g_sim) * rf : acc_t(0);
    pair_grad[a * T + t] = bad ? scalar_t(std::numeric_limits<float>::quiet_NaN()) : scalar_t(g);
  }

  publish_partials<acc_t>(reduce_storage, sums, counts, bad, ws, t, chunks, &is_last);
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  reduce_partials(p, ws, T, chunks);
  __threadfence();
  __syncthreads();
  write_loss_and_counts(T, reduction, ws.task_loss, ws.task_info, loss_out, counts_out);
}

// ---------------------------------------------------------------------------
// All pairs, large batches (squared hinge): the sorted path of
// csrc/loss/sorted_pairs_generic.h, O(G^2 B log B) per task instead of B^2. ATen
// sorts and scans; this kernel is its per-row pass, one thread per (task,
// sorted position).

constexpr int kSortedRowThreads = 256;

__global__ void __launch_bounds__(kSortedRowThreads) sorted_rows_kernel(SortedRows rows, LossParams p) {
  const int64_t i = int64_t(blockIdx.x) * kSortedRowThreads + threadIdx.x;
  if (i >= rows.T * rows.B) return;
  sorted_hinge_row(rows, p, i / rows.B, i % rows.B);
}

void sorted_rows_cuda(const SortedRows& rows, const LossParams& p) {
  const int64_t n = rows.T * rows.B;
  const unsigned blocks = unsigned((n + kSortedRowThreads - 1) / kSortedRowThreads);
  sorted_rows_kernel<<<blocks, kSortedRowThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(rows, p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The smallest batch that takes the sorted path (csrc/loss/tuning.h). Its
// state lives in _C, which this library does not link: read through the op
// that moves it, once per call (a dispatcher call, well under a kernel launch).
int64_t cuda_sorted_min_batch() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("spinerank_ext::_cuda_sorted_min_batch", "")
                             .typed<int64_t(int64_t)>();
  return op.call(-1);
}

// ---------------------------------------------------------------------------
// Host side.

std::tuple<at::Tensor, at::Tensor, at::Tensor> pairwise_rank_loss_cuda(
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
  check_cuda_inputs(scores, num_grades);
  const c10::cuda::CUDAGuard device_guard(scores.device());
  if (sync_checks_requested()) {
    check_values(scores.cpu().contiguous(), grades.cpu().contiguous(), num_grades);
  }
  const int64_t B = scores.size(0), T = scores.size(1);
  MiningArgs m{};
  if (max_pairs != -1) {
    m = mining_args(B, max_pairs, hard_fraction);
    mining_seed(seed, scores, m);
  }
  at::Tensor loss = at::empty(reduction == TaskReduction::None ? c10::IntArrayRef{T} : c10::IntArrayRef{},
                              scores.options());
  at::Tensor pair_grad = at::empty({B, T}, scores.options());
  at::Tensor counts = at::empty({T, 2}, scores.options().dtype(at::kLong));
  if (B == 0 || T == 0) {
    return {loss.zero_(), pair_grad, counts.zero_()};
  }
  const at::Tensor s = scores.contiguous();
  const at::Tensor y = grades.contiguous();
  const TaskGrades ks = task_grades(num_grades);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const unsigned chunks = unsigned((B + kRowThreads - 1) / kRowThreads);
  const dim3 rows_grid(chunks, unsigned(T));

  if (max_pairs == -1 && p.pair_fn == PairFn::SquaredHinge && B >= cuda_sorted_min_batch()) {
    return sorted_hinge_loss_generic(s, y, num_grades, p, reduction, &sorted_rows_cuda);
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "pairwise_rank_loss_cuda", [&] {
    if (max_pairs == -1) {
      const WorkspaceBuffers buffers = all_pairs_workspace(s, T, chunks);
      const Workspace& ws = buffers.ws;
      C10_CUDA_CHECK(cudaMemsetAsync(ws.done, 0, sizeof(unsigned int), stream));
      const size_t smem = size_t(max_grades(num_grades)) * sizeof(int);
      auto kernel = p.pair_fn == PairFn::SquaredHinge ? all_pairs_kernel<scalar_t, PairFn::SquaredHinge>
                                                      : all_pairs_kernel<scalar_t, PairFn::Logistic>;
      kernel<<<rows_grid, kRowThreads, smem, stream>>>(
          s.const_data_ptr<scalar_t>(), y.const_data_ptr(), y.scalar_type() == at::kLong, B, int(T),
          ks, p, reduction, ws, pair_grad.mutable_data_ptr<scalar_t>(),
          loss.mutable_data_ptr<scalar_t>(), counts.mutable_data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else {
      const WorkspaceBuffers buffers = mining_workspace(s, B, T, m);
      launch_select<scalar_t>(s, y, ks, p, m, buffers.ws, nullptr, stream);
      launch_kept_grad<scalar_t>(rows_grid, B, T, reduction, m, buffers.ws, pair_grad, loss, counts, stream);
    }
  });
  return {loss, pair_grad, counts};
}
static_assert(std::is_same_v<decltype(pairwise_rank_loss_cuda), PairwiseRankLossSignature>);

at::Tensor mined_pairs_cuda(const at::Tensor& scores, const at::Tensor& grades,
                            c10::IntArrayRef num_grades, double margin_base, double margin_scale,
                            int64_t max_pairs, double hard_fraction,
                            const std::optional<at::Tensor>& seed) {
  check_scores_grades(scores, grades, num_grades);
  TORCH_CHECK_VALUE(max_pairs >= 1, "mined_pairs needs max_pairs >= 1, got ", max_pairs);
  check_mining(max_pairs, hard_fraction, seed);
  check_cuda_inputs(scores, num_grades);
  const c10::cuda::CUDAGuard device_guard(scores.device());
  if (sync_checks_requested()) {
    check_values(scores.cpu().contiguous(), grades.cpu().contiguous(), num_grades);
  }
  // Only the margin enters the hardness; the other parameters do not matter here.
  const LossParams p{1.0, margin_base, margin_scale, 1.0, 1.0, 1.0, true, PairFn::SquaredHinge};
  const int64_t B = scores.size(0), T = scores.size(1);
  if (B == 0 || T == 0) return at::full({T, max_pairs, 2}, -1, scores.options().dtype(at::kLong));
  MiningArgs m = mining_args(B, max_pairs, hard_fraction);
  mining_seed(seed, scores, m);
  at::Tensor out = at::empty({T, max_pairs, 2}, scores.options().dtype(at::kLong));
  const at::Tensor s = scores.contiguous();
  const at::Tensor y = grades.contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "mined_pairs_cuda", [&] {
    const WorkspaceBuffers buffers = mining_workspace(s, B, T, m);
    launch_select<scalar_t>(s, y, task_grades(num_grades), p, m, buffers.ws,
                            out.mutable_data_ptr<int64_t>(), stream);
  });
  return out;
}

}  // namespace
}  // namespace spinerank::cuda

TORCH_LIBRARY_IMPL(spinerank_ext, CUDA, m) {
  m.impl("pairwise_rank_loss", &spinerank::cuda::pairwise_rank_loss_cuda);
  m.impl("mined_pairs", &spinerank::cuda::mined_pairs_cuda);
}
