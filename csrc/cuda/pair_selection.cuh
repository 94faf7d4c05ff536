// Mining on CUDA (pair_selection_cuda.cu): the pairs a mined task keeps
// (SPEC §3), exactly the set of cpu::select_pairs (csrc/cpu/pair_selection.h),
// from the shared order and draws of csrc/loss/pair_math.h and
// csrc/loss/pair_select.h, and the gradient of the kept pairs.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "cuda/loss_workspace.cuh"

namespace spinerank::cuda {

// The select kernel, one block per task: compacts the task's valid samples,
// selects its kept pairs into the workspace and either writes them as batch
// rows to mined_out ((T, max_pairs, 2), padded with -1; mined_pairs) or, when
// mined_out is null, evaluates them: task_loss, task_info and each kept pair's
// normalised d loss / d s_a.
template <typename scalar_t>
void launch_select(const at::Tensor& s, const at::Tensor& y, TaskGrades ks, const LossParams& p,
                   const MiningArgs& m, const Workspace& ws, int64_t* mined_out,
                   cudaStream_t stream);

// The kept_grad kernel on grid (chunks, T) after select: each batch row's
// gradient from the kept pairs into pair_grad, the loss and the counts.
template <typename scalar_t>
void launch_kept_grad(dim3 grid, int64_t B, int64_t T, TaskReduction reduction, const MiningArgs& m,
                      const Workspace& ws, at::Tensor& pair_grad, at::Tensor& loss,
                      at::Tensor& counts, cudaStream_t stream);

}  // namespace spinerank::cuda
