// Mining on CUDA (pair_selection.cuh), two kernels. select (one block per
// task) compacts the task's valid samples, finds the hardness threshold of the
// hard part by radix select on the 64-bit hardness keys, replays Floyd's draws
// into a hash set, sweeps the pairs in index order writing the kept list, and
// evaluates the kept pairs. kept_grad (block (chunk, t)) sums each row's
// kept-pair gradients in list order; its first block writes the loss and the
// counts.
//
// The same pairs as the CPU, bit for bit: the hardness is a double rounded
// operation by operation (mining_hardness), and the random part replays the
// CPU's Floyd draws from the same Philox stream. The select kernel's steps are
// the functions numbered 1 to 5 below; tests/cpp/select_emulation.cpp replays
// steps 2 to 4 on the CPU. Every step function is called by the whole block
// (the block scans and barriers inside need every thread) and force-inlined:
// the kernel compiles to one body, as it was written before the split.
#include "cuda/pair_selection.cuh"

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <limits>

#include "loss/pair_math.h"
#include "loss/pair_select.h"

namespace spinerank::cuda {
namespace {

using BlockScan = cub::BlockScan<int, kSelectThreads>;
using BlockReduceI = cub::BlockReduce<int64_t, kSelectThreads>;
template <typename acc_t>
using BlockReduceA = cub::BlockReduce<acc_t, kSelectThreads>;

// Task t's slices of the mining workspace: its valid samples in batch order
// (score, grade, batch row), each batch row's position among them, and the
// kept pairs as positions.
struct SelectTask {
  double* s;
  int* y;
  int* rows;
  int* pos;
  int* kept_a;
  int* kept_b;
};

__device__ __forceinline__ SelectTask select_task(const Workspace& ws, int t, int64_t B, int64_t cap) {
  return {ws.comp_s + int64_t(t) * B,     ws.comp_y + int64_t(t) * B,
          ws.comp_row + int64_t(t) * B,   ws.pos_of_row + int64_t(t) * B,
          ws.kept_a + int64_t(t) * cap,   ws.kept_b + int64_t(t) * cap};
}

// The 64-bit key of pair (a, b)'s mining hardness (pair_math.h): larger is harder.
struct HardnessKeys {
  const LossParams& p;
  const double* s;
  const int* y;
  double inv_km1;
  __device__ __forceinline__ uint64_t operator()(int64_t a, int64_t b) const {
    return hardness_key(mining_hardness(p, s[a], s[b], y[a] - y[b], inv_km1));
  }
};

// 1. The task's valid samples in batch order (an order-keeping compaction)
// into task.s, task.y and task.rows, and each batch row's position in task.pos
// (-1: missing or bad). A bad value (a grade >= K, a non-finite score) sets
// bad_seen. Returns n, the number of valid samples.
template <typename scalar_t>
__device__ __forceinline__ int64_t compact_samples(const scalar_t* __restrict__ scores,
                                                   const void* __restrict__ grades, bool wide_grades,
                                                   int64_t B, int T, int t, int K, const SelectTask& task,
                                                   typename BlockScan::TempStorage& scan, int& bad_seen) {
  const int tid = threadIdx.x;
  int64_t n = 0;
  for (int64_t base = 0; base < B; base += kSelectThreads) {
    const int64_t b = base + tid;
    int valid = 0, y_b = -1;
    double s_b = 0.0;
    if (b < B) {
      const int64_t g = load_grade(grades, b * T + t, wide_grades);
      if (g >= 0) {
        s_b = to_double(scores[b * T + t]);
        if (g < K && isfinite(s_b)) {
          valid = 1;
          y_b = int(g);
        } else {
          bad_seen = 1;
        }
      }
    }
    int offset, total;
    BlockScan(scan).ExclusiveSum(valid, offset, total);
    if (b < B) task.pos[b] = valid ? int(n + offset) : -1;
    if (valid) {
      task.s[n + offset] = s_b;
      task.y[n + offset] = y_b;
      task.rows[n + offset] = int(b);
    }
    n += total;
    __syncthreads();  // storage is reused
  }
  return n;
}

// The hard pairs are those with a key above `threshold` and the first `ties`
// (in index order) with a key equal to it.
struct HardCut {
  uint64_t threshold;
  int64_t ties;
};

// 2. The hard part: the k_hard-th largest key by radix select, 8 bits a pass
// from the top. Thread 0 picks each digit; prefix_shared and remaining_shared
// carry it to the block.
__device__ __forceinline__ HardCut hard_cut(const HardnessKeys& key_of, int64_t n, int64_t P, int64_t k_hard,
                                            unsigned long long* digit_count, uint64_t& prefix_shared,
                                            int64_t& remaining_shared) {
  const int tid = threadIdx.x;
  uint64_t threshold = 0;
  int64_t ties = 0;
  if (k_hard > 0) {
    uint64_t prefix = 0, mask = 0;
    int64_t remaining = k_hard;
    for (int shift = 56; shift >= 0; shift -= 8) {
      for (int i = tid; i < 256; i += kSelectThreads) digit_count[i] = 0;
      __syncthreads();
      PairCursor c(n, tid);
      for (int64_t q = tid; q < P; q += kSelectThreads, c.advance(kSelectThreads)) {
        const uint64_t key = key_of(c.a, c.b);
        if ((key & mask) == prefix) atomicAdd(&digit_count[(key >> shift) & 255], 1ull);
      }
      __syncthreads();
      if (tid == 0) {
        const DigitPick pick = pick_digit(digit_count, remaining);
        prefix_shared = prefix | (uint64_t(pick.digit) << shift);
        remaining_shared = remaining - pick.above;
      }
      __syncthreads();
      prefix = prefix_shared;
      remaining = remaining_shared;
      mask |= uint64_t(255) << shift;
    }
    threshold = prefix;
    ties = remaining;
  }
  return {threshold, ties};
}

// 3. The random part: Floyd's algorithm over the M = P - k_hard other pairs,
// exactly as on the CPU, into the hash set `table`. The draws are computed in
// parallel, the (sequential) set updates by one thread.
__device__ __forceinline__ void draw_random_pairs(const MiningArgs& m, const Workspace& ws, int t,
                                                  const KeepCounts& kc, int64_t* table) {
  const int tid = threadIdx.x;
  const int64_t table_cap = m.table_cap;
  const int64_t k_rand = kc.k_rand;
  if (k_rand > 0) {
    const uint64_t seed = m.seed_ptr != nullptr ? uint64_t(*m.seed_ptr) : m.seed_value;
    const int64_t M = kc.P - kc.k_hard;
    int64_t* draws = ws.draws + int64_t(t) * m.cap;
    for (int64_t i = tid; i < table_cap; i += kSelectThreads) table[i] = -1;
    for (int64_t i = tid; i < k_rand; i += kSelectThreads) draws[i] = floyd_draw(seed, t, M - k_rand + i);
    __syncthreads();
    if (tid == 0) {
      for (int64_t i = 0; i < k_rand; ++i) floyd_insert(table, table_cap, draws[i], M - k_rand + i);
    }
    __syncthreads();
  }
}

// 4. The kept pairs, in index order, into task.kept_a / task.kept_b (at most
// cap): one sweep, three block scans a chunk (ties taken so far, hard pairs so
// far, kept pairs so far).
__device__ __forceinline__ void sweep_kept_pairs(const HardnessKeys& key_of, int64_t n, const KeepCounts& kc,
                                                 HardCut cut, const int64_t* table, int64_t table_cap,
                                                 int64_t cap, const SelectTask& task,
                                                 typename BlockScan::TempStorage& scan) {
  const int tid = threadIdx.x;
  const int64_t P = kc.P, n_keep = kc.n_keep, k_hard = kc.k_hard, k_rand = kc.k_rand;
  const bool keep_all = kc.keep_all;
  if (P > 0) {
    int64_t ties_before = 0, hard_before = 0, kept_before = 0;
    PairCursor c(n, tid);
    for (int64_t base = 0; base < P && kept_before < n_keep; base += kSelectThreads) {
      const int64_t q = base + tid;
      const bool in = q < P;
      int tie = 0, above = 0;
      if (in && k_hard > 0) {
        const uint64_t key = key_of(c.a, c.b);
        above = key > cut.threshold;
        tie = key == cut.threshold;
      }
      int tie_offset, tie_total;
      BlockScan(scan).ExclusiveSum(tie, tie_offset, tie_total);
      __syncthreads();
      const int hard = above || (tie && ties_before + tie_offset < cut.ties);
      int hard_offset, hard_total;
      BlockScan(scan).ExclusiveSum(hard, hard_offset, hard_total);
      __syncthreads();
      int kept = keep_all ? int(in) : hard;
      if (in && !keep_all && !hard && k_rand > 0) {
        // The rank of this pair among the non-hard ones.
        kept = hash_contains(table, table_cap, q - (hard_before + hard_offset));
      }
      int kept_offset, kept_total;
      BlockScan(scan).ExclusiveSum(kept, kept_offset, kept_total);
      __syncthreads();
      const int64_t o = kept_before + kept_offset;
      if (kept && o < cap) {
        task.kept_a[o] = int(c.a);
        task.kept_b[o] = int(c.b);
      }
      ties_before += tie_total;
      hard_before += hard_total;
      kept_before += kept_total;
      c.advance(kSelectThreads);
    }
  }
}

// mined_pairs: the n_keep kept pairs as batch rows into out (max_pairs, 2),
// padded with -1.
__device__ __forceinline__ void write_mined_rows(int64_t* out, int64_t max_pairs, int64_t n_keep,
                                                 const SelectTask& task) {
  const int tid = threadIdx.x;
  for (int64_t i = tid; i < max_pairs; i += kSelectThreads) {
    const bool has = i < n_keep;
    out[2 * i] = has ? task.rows[task.kept_a[i]] : -1;
    out[2 * i + 1] = has ? task.rows[task.kept_b[i]] : -1;
  }
}

// 5. The kept pairs' loss and normalised gradient: each pair's d loss / d s_a
// into kept_dl, the task's loss and (n_dis, n_sim, n_valid, bad) into task_loss
// and task_info.
template <typename acc_t>
__device__ __forceinline__ void kept_pairs_loss(const LossParams& p, int K, int t, int64_t n, int64_t n_keep,
                                                const SelectTask& task, double* kept_dl, const Workspace& ws,
                                                typename BlockReduceI::TempStorage& reduce_i,
                                                typename BlockReduceA<acc_t>::TempStorage& reduce_a,
                                                int64_t& n_sim_shared, const int& bad_seen) {
  const int tid = threadIdx.x;
  const int* kept_a = task.kept_a;
  const int* kept_b = task.kept_b;
  const double* s = task.s;
  const int* y = task.y;
  int64_t my_sim = 0;
  for (int64_t i = tid; i < n_keep; i += kSelectThreads) my_sim += y[kept_a[i]] == y[kept_b[i]];
  const int64_t block_sim = BlockReduceI(reduce_i).Sum(my_sim);
  if (tid == 0) n_sim_shared = block_sim;
  __syncthreads();
  const int64_t n_sim = n_sim_shared, n_dis = n_keep - n_sim;
  const acc_t cd = acc_t(dis_factor(p, n_dis, n_sim)), cs = acc_t(sim_factor(p, n_dis, n_sim));
  const acc_t inv_km1_acc = acc_t(1) / acc_t(K - 1);
  acc_t l_dis = 0, l_sim = 0;
  for (int64_t i = tid; i < n_keep; i += kSelectThreads) {
    const int ia = kept_a[i], ib = kept_b[i];
    const acc_t delta = acc_t(s[ia]) - acc_t(s[ib]);
    const int d = y[ia] - y[ib];
    acc_t dl;
    if (d == 0) {
      const PairTerm<acc_t> o = similar_pair(delta);
      l_sim += o.loss;
      dl = cs * o.dloss;
    } else {
      const acc_t rdelta = d > 0 ? delta : -delta;
      const acc_t gap = grade_gap(d, inv_km1_acc);
      const PairTerm<acc_t> o = p.pair_fn == PairFn::SquaredHinge
                                    ? ordinal_pair<acc_t, PairFn::SquaredHinge>(p, rdelta, gap)
                                    : ordinal_pair<acc_t, PairFn::Logistic>(p, rdelta, gap);
      l_dis += o.loss;
      dl = cd * (d > 0 ? o.dloss : -o.dloss);
    }
    kept_dl[i] = double(dl);
  }
  const acc_t sum_dis = BlockReduceA<acc_t>(reduce_a).Sum(l_dis);
  __syncthreads();
  const acc_t sum_sim = BlockReduceA<acc_t>(reduce_a).Sum(l_sim);
  if (tid == 0) {
    ws.task_loss[t] = double(cd) * double(sum_dis) + double(cs) * double(sum_sim);
    ws.task_info[4 * t + kInfoDis] = n_dis;
    ws.task_info[4 * t + kInfoSim] = n_sim;
    ws.task_info[4 * t + kInfoValid] = n;
    ws.task_info[4 * t + kInfoBad] = bad_seen;
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kSelectThreads) select_kernel(
    const scalar_t* __restrict__ scores, const void* __restrict__ grades, bool wide_grades,
    int64_t B, int T, TaskGrades ks, LossParams p, MiningArgs m, Workspace ws,
    int64_t* __restrict__ mined_out) {
  using acc_t = typename AccType<scalar_t>::type;
  __shared__ union {
    typename BlockScan::TempStorage scan;
    typename BlockReduceI::TempStorage reduce_i;
    typename BlockReduceA<acc_t>::TempStorage reduce_a;
  } storage;
  __shared__ unsigned long long digit_count[256];
  __shared__ uint64_t prefix_shared;
  __shared__ int64_t remaining_shared, n_sim_shared;
  __shared__ int bad_seen;
  extern __shared__ int64_t smem_table[];

  const int t = blockIdx.x;
  const int K = ks.k[t];
  const SelectTask task = select_task(ws, t, B, m.cap);
  if (threadIdx.x == 0) bad_seen = 0;
  __syncthreads();

  const int64_t n = compact_samples(scores, grades, wide_grades, B, T, t, K, task, storage.scan, bad_seen);
  const KeepCounts kc = keep_counts(n, m.max_pairs, m.hard_fraction);
  const HardnessKeys key_of{p, task.s, task.y, 1.0 / double(K - 1)};
  const HardCut cut = hard_cut(key_of, n, kc.P, kc.k_hard, digit_count, prefix_shared, remaining_shared);
  int64_t* table = m.table_in_smem ? smem_table : ws.table + int64_t(t) * m.table_cap;
  draw_random_pairs(m, ws, t, kc, table);
  sweep_kept_pairs(key_of, n, kc, cut, table, m.table_cap, m.cap, task, storage.scan);
  __syncthreads();

  if (mined_out != nullptr) {  // mined_pairs: batch rows, padded with -1
    write_mined_rows(mined_out + int64_t(t) * m.max_pairs * 2, m.max_pairs, kc.n_keep, task);
    return;
  }
  kept_pairs_loss<acc_t>(p, K, t, n, kc.n_keep, task, ws.kept_dl + int64_t(t) * m.cap, ws, storage.reduce_i,
                         storage.reduce_a, n_sim_shared, bad_seen);
}

// d loss / d s for every batch row: the sum, in kept-list order, of the kept
// pairs' gradients where the row is a (+) or b (-).
template <typename scalar_t>
__global__ void __launch_bounds__(kRowThreads) kept_grad_kernel(
    int64_t B, int T, TaskReduction reduction, int64_t cap, Workspace ws,
    scalar_t* __restrict__ pair_grad, scalar_t* __restrict__ loss_out,
    int64_t* __restrict__ counts_out) {
  using acc_t = typename AccType<scalar_t>::type;
  __shared__ int tile_a[kRowThreads], tile_b[kRowThreads];
  __shared__ acc_t tile_dl[kRowThreads];
  __shared__ int tasks_with_pairs;

  const int t = blockIdx.y;
  if (threadIdx.x == 0) {
    int count = 0;
    for (int u = 0; u < T; ++u) count += ws.task_info[4 * u + kInfoValid] >= 2;
    tasks_with_pairs = count;
  }
  __syncthreads();
  const int64_t n_keep = ws.task_info[4 * t + kInfoDis] + ws.task_info[4 * t + kInfoSim];
  const bool bad = ws.task_info[4 * t + kInfoBad] != 0;
  const int64_t r = int64_t(blockIdx.x) * kRowThreads + threadIdx.x;
  const int x = r < B ? ws.pos_of_row[int64_t(t) * B + r] : -1;
  const int* kept_a = ws.kept_a + int64_t(t) * cap;
  const int* kept_b = ws.kept_b + int64_t(t) * cap;
  const double* kept_dl = ws.kept_dl + int64_t(t) * cap;

  acc_t g = 0;
  for (int64_t base = 0; base < n_keep; base += kRowThreads) {
    const int64_t i = base + threadIdx.x;
    if (i < n_keep) {
      tile_a[threadIdx.x] = kept_a[i];
      tile_b[threadIdx.x] = kept_b[i];
      tile_dl[threadIdx.x] = acc_t(kept_dl[i]);
    }
    __syncthreads();
    if (x >= 0) {
      const int m = int(n_keep - base < kRowThreads ? n_keep - base : kRowThreads);
      for (int j = 0; j < m; ++j) {
        if (tile_a[j] == x) g += tile_dl[j];
        else if (tile_b[j] == x) g -= tile_dl[j];
      }
    }
    __syncthreads();
  }
  if (r < B) {
    const acc_t rf = reduction == TaskReduction::Mean
                         ? acc_t(1.0 / double(tasks_with_pairs > 1 ? tasks_with_pairs : 1))
                         : acc_t(1);
    pair_grad[r * T + t] =
        bad ? scalar_t(std::numeric_limits<float>::quiet_NaN()) : scalar_t(x >= 0 ? g * rf : acc_t(0));
  }
  if (blockIdx.x == 0 && blockIdx.y == 0) {
    write_loss_and_counts(T, reduction, ws.task_loss, ws.task_info, loss_out, counts_out);
  }
}

}  // namespace

template <typename scalar_t>
void launch_select(const at::Tensor& s, const at::Tensor& y, TaskGrades ks, const LossParams& p,
                   const MiningArgs& m, const Workspace& ws, int64_t* mined_out,
                   cudaStream_t stream) {
  const int64_t B = s.size(0), T = s.size(1);
  const size_t smem = m.table_in_smem ? size_t(m.table_cap) * sizeof(int64_t) : 0;
  select_kernel<scalar_t><<<unsigned(T), kSelectThreads, smem, stream>>>(
      s.const_data_ptr<scalar_t>(), y.const_data_ptr(), y.scalar_type() == at::kLong, B, int(T),
      ks, p, m, ws, mined_out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_kept_grad(dim3 grid, int64_t B, int64_t T, TaskReduction reduction, const MiningArgs& m,
                      const Workspace& ws, at::Tensor& pair_grad, at::Tensor& loss,
                      at::Tensor& counts, cudaStream_t stream) {
  kept_grad_kernel<scalar_t><<<grid, kRowThreads, 0, stream>>>(
      B, int(T), reduction, m.cap, ws, pair_grad.mutable_data_ptr<scalar_t>(),
      loss.mutable_data_ptr<scalar_t>(), counts.mutable_data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The dtypes the entries dispatch on (AT_DISPATCH_FLOATING_TYPES_AND2 with
// Half and BFloat16).
#define SPINERANK_MINING_LAUNCHERS(scalar_t)                                                        \
  template void launch_select<scalar_t>(const at::Tensor&, const at::Tensor&, TaskGrades,           \
                                        const LossParams&, const MiningArgs&, const Workspace&,    \
                                        int64_t*, cudaStream_t);                                   \
  template void launch_kept_grad<scalar_t>(dim3, int64_t, int64_t, TaskReduction, const MiningArgs&, \
                                           const Workspace&, at::Tensor&, at::Tensor&, at::Tensor&, \
                                           cudaStream_t);
SPINERANK_MINING_LAUNCHERS(double)
SPINERANK_MINING_LAUNCHERS(float)
SPINERANK_MINING_LAUNCHERS(c10::Half)
SPINERANK_MINING_LAUNCHERS(c10::BFloat16)
#undef SPINERANK_MINING_LAUNCHERS

}  // namespace spinerank::cuda
