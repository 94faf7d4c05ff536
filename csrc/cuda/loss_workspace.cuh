// What the CUDA kernels of pairwise_rank_loss and mined_pairs share: the
// limits and launch shapes, the dtype and input helpers, the scratch memory of
// a call (Workspace) and its layout (loss_workspace.cu), the host-side argument
// helpers, and the block function that writes the loss and the counts. The
// loss paths are in pairwise_rank_loss_cuda.cu, mining's pair selection in
// pair_selection_cuda.cu.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <limits>
#include <optional>

#include "loss/args.h"
#include "loss/pair_math.h"

namespace spinerank::cuda {

constexpr int kMaxTasks = 512;        // K_t travels in a kernel argument
constexpr int kMaxGrades = 4096;      // the grade histogram lives in shared memory
constexpr int kRowThreads = 256;      // all_pairs and kept_grad: rows per block
constexpr int kSelectThreads = 512;   // select: one block per task
constexpr int kSmemTableBytes = 32 * 1024;  // Floyd's hash set, when it fits

template <typename scalar_t>
struct AccType {
  using type = float;  // float, half and bfloat16 accumulate in float
};
template <>
struct AccType<double> {
  using type = double;
};

// K_t by value: a host-to-device copy of num_grades would be a synchronising
// copy from pageable memory, and could not be captured in a CUDA graph.
struct TaskGrades {
  int k[kMaxTasks];
};

template <typename scalar_t>
__device__ __forceinline__ double to_double(scalar_t x) {
  return static_cast<double>(static_cast<float>(x));
}
template <>
__device__ __forceinline__ double to_double<double>(double x) {
  return x;
}

// int32 or int64 grades through one load instead of a second template axis.
__device__ __forceinline__ int64_t load_grade(const void* grades, int64_t i, bool wide) {
  return wide ? static_cast<const int64_t*>(grades)[i] : int64_t(static_cast<const int32_t*>(grades)[i]);
}

// The scratch memory of one call, carved from a single allocation.
struct Workspace {
  double* task_loss;     // (T,) per-task loss
  int64_t* task_info;    // (T, 4): n_dis, n_sim, n_valid, bad
  unsigned int* done;    // all pairs: blocks finished (the last one reduces)
  double* partials;      // all pairs: (T, chunks, 2) loss partials (ordinal, similar)
  double* comp_s;        // mining: (T, B) the valid scores of each task, batch order
  int* comp_y;           // mining: (T, B) their grades
  int* comp_row;         // mining: (T, B) their batch rows
  int* pos_of_row;       // mining: (T, B) a batch row's position in that list, -1 if missing
  int* kept_a;           // mining: (T, cap) the kept pairs as positions a < b, in index order
  int* kept_b;
  double* kept_dl;       // mining: (T, cap) d loss / d s_a of each kept pair, normalised
  int64_t* draws;        // mining: (T, cap) Floyd's candidate ranks
  int64_t* table;        // mining: (T, table_cap) the hash set of drawn ranks, unless in smem
};

constexpr int kInfoDis = 0, kInfoSim = 1, kInfoValid = 2, kInfoBad = 3;

// Mining's arguments and the shape of its workspace (mining_args).
struct MiningArgs {
  int64_t max_pairs;
  double hard_fraction;
  const int64_t* seed_ptr;  // a seed on the device, or null ...
  uint64_t seed_value;      // ... and then this one, from a CPU tensor
  int64_t cap;              // kept pairs per task in the workspace
  int64_t table_cap;        // hash set slots (a power of two)
  bool table_in_smem;
};

// Writes the loss and the (T, 2) counts from the per-task results in
// task_loss / task_info, summing the tasks in order. Needs the whole block.
template <typename scalar_t>
__device__ void write_loss_and_counts(int T, TaskReduction reduction, const double* task_loss,
                                      const int64_t* task_info, scalar_t* loss_out,
                                      int64_t* counts_out) {
  __shared__ double loss_of[kMaxTasks];
  __shared__ int has_pairs[kMaxTasks];
  for (int t = threadIdx.x; t < T; t += blockDim.x) {
    const int64_t n_dis = __ldcg(task_info + 4 * t + kInfoDis);
    const int64_t n_sim = __ldcg(task_info + 4 * t + kInfoSim);
    const bool bad = __ldcg(task_info + 4 * t + kInfoBad) != 0;
    const double l = bad ? std::numeric_limits<double>::quiet_NaN() : __ldcg(task_loss + t);
    loss_of[t] = l;
    has_pairs[t] = n_dis + n_sim > 0;
    counts_out[2 * t] = n_dis;
    counts_out[2 * t + 1] = n_sim;
    if (reduction == TaskReduction::None) loss_out[t] = scalar_t(l);
  }
  __syncthreads();
  if (threadIdx.x == 0 && reduction != TaskReduction::None) {
    double total = 0.0;
    int non_empty = 0;
    for (int t = 0; t < T; ++t) {
      total += loss_of[t];
      non_empty += has_pairs[t];
    }
    if (reduction == TaskReduction::Mean) total /= double(non_empty > 1 ? non_empty : 1);
    *loss_out = scalar_t(total);
  }
}

// ---------------------------------------------------------------------------
// Host side (loss_workspace.cu).

// The workspace of a call and the tensor that holds its memory.
struct WorkspaceBuffers {
  at::Tensor storage;  // keeps the memory alive until the kernels are queued
  Workspace ws;
};

// All pairs: per-task results, the finished-blocks ticket and the per-block partials.
WorkspaceBuffers all_pairs_workspace(const at::Tensor& scores, int64_t T, int64_t chunks);
// Mining: per-task results, the compacted samples, the kept pairs, the draws
// and (unless in shared memory) the hash sets.
WorkspaceBuffers mining_workspace(const at::Tensor& scores, int64_t B, int64_t T, const MiningArgs& m);

TaskGrades task_grades(c10::IntArrayRef num_grades);
int max_grades(c10::IntArrayRef num_grades);
// The limits of the CUDA kernels: T <= kMaxTasks, K <= kMaxGrades.
void check_cuda_inputs(const at::Tensor& scores, c10::IntArrayRef num_grades);
// SPINERANK_EXT_SYNC_CHECKS=1: check the values on the host (the CPU messages).
bool sync_checks_requested();

// The mining workspace and launch shape for n <= B samples per task.
MiningArgs mining_args(int64_t B, int64_t max_pairs, double hard_fraction);
// Where the mining seed comes from: a CPU tensor is read here (no device
// synchronisation), a CUDA tensor by the kernel.
void mining_seed(const std::optional<at::Tensor>& seed, const at::Tensor& scores, MiningArgs& m);

}  // namespace spinerank::cuda
