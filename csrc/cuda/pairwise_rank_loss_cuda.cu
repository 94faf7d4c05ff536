// CUDA kernels of pairwise_rank_loss and mined_pairs (SPEC §3).
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
// Mining, two kernels: select (one block per task) compacts the task's valid
// samples, finds the hardness threshold of the hard part by radix select on the
// 64-bit hardness keys, replays Floyd's draws into a hash set, sweeps the pairs
// in index order writing the kept list, and evaluates the kept pairs.
// kept_grad (block (chunk, t)) sums each row's kept-pair gradients in list
// order; its first block writes the loss and the counts.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "loss/pair_math.h"
#include "loss/pair_select.h"
#include "loss/args.h"
#include "loss/check_values.h"
#include "loss/sorted_pairs_generic.h"

namespace spinerank {
namespace {

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
// All pairs.

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

  // This thread's row; y_a < 0 when it is missing, invalid or past the end.
  int y_a = -1;
  acc_t s_a = 0;
  if (a < B) {
    const int64_t y = load_grade(grades, a * T + t, wide_grades);
    s_a = static_cast<acc_t>(scores[a * T + t]);
    if (y >= 0 && y < K && isfinite(s_a)) y_a = int(y);
  }

  const acc_t inv_km1 = acc_t(1) / acc_t(K - 1);
  acc_t g_dis = 0, g_sim = 0, l_dis = 0, l_sim = 0;
  for (int64_t base = 0; base < B; base += kRowThreads) {
    const int64_t b = base + threadIdx.x;
    int y_b = -1;
    acc_t s_b = 0;
    if (b < B) {
      const int64_t y = load_grade(grades, b * T + t, wide_grades);
      if (y >= 0) {
        s_b = static_cast<acc_t>(scores[b * T + t]);
        if (y < K && isfinite(s_b)) {
          y_b = int(y);
          atomicAdd(&grade_count[y_b], 1);  // integer: the counts do not depend on order
          atomicMax(&top_grade, y_b);
        } else {
          bad_seen = 1;  // every writer stores the same value
        }
      }
    }
    tile_s[threadIdx.x] = s_b;
    tile_y[threadIdx.x] = y_b;
    __syncthreads();
    if (y_a >= 0) {
      const int m = int(B - base < kRowThreads ? B - base : kRowThreads);
      for (int j = 0; j < m; ++j) {
        const int y_j = tile_y[j];
        if (y_j < 0) continue;  // the same j for the whole warp: no divergence
        const acc_t delta = s_a - tile_s[j];
        const int d = y_a - y_j;
        const bool counts_loss = base + j > a;  // a pair's loss is counted by its left row
        if (d == 0) {
          // The self pair (j = a) adds 0 here and is not counted.
          const PairTerm<acc_t> o = similar_pair(delta);
          g_sim += o.dloss;
          if (counts_loss) l_sim += o.loss;
        } else {
          const PairTerm<acc_t> o =
              ordinal_pair<acc_t, F>(p, d > 0 ? delta : -delta, grade_gap(d, inv_km1));
          g_dis += d > 0 ? o.dloss : -o.dloss;
          if (counts_loss) l_dis += o.loss;
        }
      }
    }
    __syncthreads();
  }

  if (threadIdx.x == 0) {
    int64_t n = 0, n_sim = 0;
    for (int c = 0; c <= top_grade; ++c) {  // the grades that occur, not K
      const int64_t m = grade_count[c];
      n += m;
      n_sim += m * (m - 1) / 2;
    }
    n_valid_shared = n;
    n_sim_shared = n_sim;
    n_dis_shared = n * (n - 1) / 2 - n_sim;
  }
  __syncthreads();
  const int64_t n_dis = n_dis_shared, n_sim = n_sim_shared;
  const bool bad = bad_seen != 0;
  if (a < B) {
    const acc_t cd = acc_t(dis_factor(p, n_dis, n_sim)), cs = acc_t(sim_factor(p, n_dis, n_sim));
    const acc_t rf = acc_t(1.0 / double(tasks_with_pairs > 1 ? tasks_with_pairs : 1));
    const acc_t g = y_a >= 0 ? (cd * g_dis + cs * g_sim) * rf : acc_t(0);
    pair_grad[a * T + t] = bad ? scalar_t(std::numeric_limits<float>::quiet_NaN()) : scalar_t(g);
  }

  const acc_t block_dis = BlockReduce(reduce_storage).Sum(l_dis);
  __syncthreads();
  const acc_t block_sim = BlockReduce(reduce_storage).Sum(l_sim);
  if (threadIdx.x == 0) {
    double* partial = ws.partials + (int64_t(t) * chunks + blockIdx.x) * 2;
    partial[0] = double(block_dis);
    partial[1] = double(block_sim);
    if (blockIdx.x == 0) {
      ws.task_info[4 * t + kInfoDis] = n_dis;
      ws.task_info[4 * t + kInfoSim] = n_sim;
      ws.task_info[4 * t + kInfoValid] = n_valid_shared;
      ws.task_info[4 * t + kInfoBad] = bad;
    }
    __threadfence();  // publish the partials before taking a ticket
    const unsigned int ticket = atomicAdd(ws.done, 1u);
    is_last = ticket == gridDim.x * gridDim.y - 1;
  }
  __syncthreads();
  if (!is_last) return;
  __threadfence();

  // The last block: per-task loss from the partials, one warp per task, lanes
  // over chunks in a fixed order, then a fixed butterfly.
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
  __threadfence();
  __syncthreads();
  write_loss_and_counts(T, reduction, ws.task_loss, ws.task_info, loss_out, counts_out);
}

// ---------------------------------------------------------------------------
// Mining.

struct MiningArgs {
  int64_t max_pairs;
  double hard_fraction;
  const int64_t* seed_ptr;  // a seed on the device, or null ...
  uint64_t seed_value;      // ... and then this one, from a CPU tensor
  int64_t cap;              // kept pairs per task in the workspace
  int64_t table_cap;        // hash set slots (a power of two)
  bool table_in_smem;
};

template <typename scalar_t>
__global__ void __launch_bounds__(kSelectThreads) select_kernel(
    const scalar_t* __restrict__ scores, const void* __restrict__ grades, bool wide_grades,
    int64_t B, int T, TaskGrades ks, LossParams p, MiningArgs m, Workspace ws,
    int64_t* __restrict__ mined_out) {
  using acc_t = typename AccType<scalar_t>::type;
  using BlockScan = cub::BlockScan<int, kSelectThreads>;
  using BlockReduceI = cub::BlockReduce<int64_t, kSelectThreads>;
  using BlockReduceA = cub::BlockReduce<acc_t, kSelectThreads>;
  __shared__ union {
    typename BlockScan::TempStorage scan;
    typename BlockReduceI::TempStorage reduce_i;
    typename BlockReduceA::TempStorage reduce_a;
  } storage;
  __shared__ unsigned long long digit_count[256];
  __shared__ uint64_t prefix_shared;
  __shared__ int64_t remaining_shared, n_sim_shared;
  __shared__ int bad_seen;
  extern __shared__ int64_t smem_table[];

  const int t = blockIdx.x;
  const int K = ks.k[t];
  const int tid = threadIdx.x;
  double* s = ws.comp_s + int64_t(t) * B;
  int* y = ws.comp_y + int64_t(t) * B;
  int* rows = ws.comp_row + int64_t(t) * B;
  int* pos = ws.pos_of_row + int64_t(t) * B;
  int* kept_a = ws.kept_a + int64_t(t) * m.cap;
  int* kept_b = ws.kept_b + int64_t(t) * m.cap;
  if (tid == 0) bad_seen = 0;
  __syncthreads();

  // 1. The task's valid samples in batch order (an order-keeping compaction).
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
    BlockScan(storage.scan).ExclusiveSum(valid, offset, total);
    if (b < B) pos[b] = valid ? int(n + offset) : -1;
    if (valid) {
      s[n + offset] = s_b;
      y[n + offset] = y_b;
      rows[n + offset] = int(b);
    }
    n += total;
    __syncthreads();  // storage is reused
  }

  const int64_t P = n * (n - 1) / 2;
  const bool keep_all = P <= m.max_pairs;
  const int64_t n_keep = keep_all ? P : m.max_pairs;
  const int64_t k_hard = keep_all ? 0 : hard_pair_count(m.max_pairs, m.hard_fraction);
  const int64_t k_rand = n_keep - (keep_all ? n_keep : k_hard);
  const double inv_km1 = 1.0 / double(K - 1);
  auto key_of = [&](int64_t a, int64_t b) {
    return hardness_key(mining_hardness(p, s[a], s[b], y[a] - y[b], inv_km1));
  };

  // 2. The hard part: the k_hard-th largest key by radix select, 8 bits a
  // pass from the top. Afterwards the hard pairs are those with a key above
  // `threshold` and the first `ties` (in index order) with a key equal to it.
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

  // 3. The random part: Floyd's algorithm over the M = P - k_hard other pairs,
  // exactly as on the CPU. The draws are computed in parallel, the
  // (sequential) set updates by one thread.
  const int64_t table_cap = m.table_cap;
  int64_t* table = m.table_in_smem ? smem_table : ws.table + int64_t(t) * table_cap;
  if (k_rand > 0) {
    const uint64_t seed = m.seed_ptr != nullptr ? uint64_t(*m.seed_ptr) : m.seed_value;
    const int64_t M = P - k_hard;
    int64_t* draws = ws.draws + int64_t(t) * m.cap;
    for (int64_t i = tid; i < table_cap; i += kSelectThreads) table[i] = -1;
    for (int64_t i = tid; i < k_rand; i += kSelectThreads) draws[i] = floyd_draw(seed, t, M - k_rand + i);
    __syncthreads();
    if (tid == 0) {
      for (int64_t i = 0; i < k_rand; ++i) floyd_insert(table, table_cap, draws[i], M - k_rand + i);
    }
    __syncthreads();
  }

  // 4. The kept pairs, in index order: one sweep, three block scans a chunk
  // (ties taken so far, hard pairs so far, kept pairs so far).
  if (P > 0) {
    int64_t ties_before = 0, hard_before = 0, kept_before = 0;
    PairCursor c(n, tid);
    for (int64_t base = 0; base < P && kept_before < n_keep; base += kSelectThreads) {
      const int64_t q = base + tid;
      const bool in = q < P;
      int tie = 0, above = 0;
      if (in && k_hard > 0) {
        const uint64_t key = key_of(c.a, c.b);
        above = key > threshold;
        tie = key == threshold;
      }
      int tie_offset, tie_total;
      BlockScan(storage.scan).ExclusiveSum(tie, tie_offset, tie_total);
      __syncthreads();
      const int hard = above || (tie && ties_before + tie_offset < ties);
      int hard_offset, hard_total;
      BlockScan(storage.scan).ExclusiveSum(hard, hard_offset, hard_total);
      __syncthreads();
      int kept = keep_all ? int(in) : hard;
      if (in && !keep_all && !hard && k_rand > 0) {
        // The rank of this pair among the non-hard ones.
        kept = hash_contains(table, table_cap, q - (hard_before + hard_offset));
      }
      int kept_offset, kept_total;
      BlockScan(storage.scan).ExclusiveSum(kept, kept_offset, kept_total);
      __syncthreads();
      const int64_t o = kept_before + kept_offset;
      if (kept && o < m.cap) {
        kept_a[o] = int(c.a);
        kept_b[o] = int(c.b);
      }
      ties_before += tie_total;
      hard_before += hard_total;
      kept_before += kept_total;
      c.advance(kSelectThreads);
    }
  }
  __syncthreads();

  if (mined_out != nullptr) {  // mined_pairs: batch rows, padded with -1
    int64_t* out = mined_out + int64_t(t) * m.max_pairs * 2;
    for (int64_t i = tid; i < m.max_pairs; i += kSelectThreads) {
      const bool has = i < n_keep;
      out[2 * i] = has ? rows[kept_a[i]] : -1;
      out[2 * i + 1] = has ? rows[kept_b[i]] : -1;
    }
    return;
  }

  // 5. The kept pairs' loss and normalised gradient.
  int64_t my_sim = 0;
  for (int64_t i = tid; i < n_keep; i += kSelectThreads) my_sim += y[kept_a[i]] == y[kept_b[i]];
  const int64_t block_sim = BlockReduceI(storage.reduce_i).Sum(my_sim);
  if (tid == 0) n_sim_shared = block_sim;
  __syncthreads();
  const int64_t n_sim = n_sim_shared, n_dis = n_keep - n_sim;
  const acc_t cd = acc_t(dis_factor(p, n_dis, n_sim)), cs = acc_t(sim_factor(p, n_dis, n_sim));
  const acc_t inv_km1_acc = acc_t(1) / acc_t(K - 1);
  acc_t l_dis = 0, l_sim = 0;
  double* kept_dl = ws.kept_dl + int64_t(t) * m.cap;
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
  const acc_t sum_dis = BlockReduceA(storage.reduce_a).Sum(l_dis);
  __syncthreads();
  const acc_t sum_sim = BlockReduceA(storage.reduce_a).Sum(l_sim);
  if (tid == 0) {
    ws.task_loss[t] = double(cd) * double(sum_dis) + double(cs) * double(sum_sim);
    ws.task_info[4 * t + kInfoDis] = n_dis;
    ws.task_info[4 * t + kInfoSim] = n_sim;
    ws.task_info[4 * t + kInfoValid] = n;
    ws.task_info[4 * t + kInfoBad] = bad_seen;
  }
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

int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

// One device allocation for all scratch memory of a call; the caching
// allocator makes it cheap and stream-ordered.
struct WorkspaceLayout {
  int64_t bytes = 0;
  int64_t take(int64_t n) {
    const int64_t at = bytes;
    bytes = round_up(bytes + n, 16);
    return at;
  }
};

TaskGrades task_grades(c10::IntArrayRef num_grades) {
  TaskGrades ks{};
  for (size_t t = 0; t < num_grades.size(); ++t) ks.k[t] = int(num_grades[t]);
  return ks;
}

int max_grades(c10::IntArrayRef num_grades) {
  int64_t k = 2;
  for (const int64_t v : num_grades) k = v > k ? v : k;
  return int(k);
}

void check_cuda_inputs(const at::Tensor& scores, c10::IntArrayRef num_grades) {
  TORCH_CHECK_VALUE(scores.size(1) <= kMaxTasks, "the CUDA kernels take at most ", kMaxTasks,
                    " tasks, got T = ", scores.size(1));
  TORCH_CHECK_VALUE(max_grades(num_grades) <= kMaxGrades, "the CUDA kernels take at most ",
                    kMaxGrades, " grades per task, got K = ", max_grades(num_grades));
}

bool sync_checks_requested() {
  const char* v = std::getenv("SPINERANK_EXT_SYNC_CHECKS");
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

// Where the mining seed comes from: a CPU tensor is read here (no device
// synchronisation), a CUDA tensor by the kernel.
void mining_seed(const std::optional<at::Tensor>& seed, const at::Tensor& scores, MiningArgs& m) {
  m.seed_ptr = nullptr;
  m.seed_value = 0;
  if (seed->device().is_cpu()) {
    m.seed_value = uint64_t(seed->item<int64_t>());
  } else {
    TORCH_CHECK_VALUE(seed->device() == scores.device(), "seed must be a CPU tensor or on ",
                      scores.device(), ", got ", seed->device());
    m.seed_ptr = seed->const_data_ptr<int64_t>();
  }
}

// The mining workspace and launch shape for n <= B samples per task.
MiningArgs mining_args(int64_t B, int64_t max_pairs, double hard_fraction) {
  MiningArgs m{};
  m.max_pairs = max_pairs;
  m.hard_fraction = hard_fraction;
  const int64_t all = B * (B - 1) / 2;
  m.cap = std::max<int64_t>(1, std::min(max_pairs, all));
  const int64_t k_rand = max_pairs - hard_pair_count(max_pairs, hard_fraction);
  m.table_cap = hash_capacity(std::min(k_rand, m.cap));
  m.table_in_smem = m.table_cap * int64_t(sizeof(int64_t)) <= kSmemTableBytes;
  return m;
}

struct WorkspaceBuffers {
  at::Tensor storage;  // keeps the memory alive until the kernels are queued
  Workspace ws;
};

// All pairs: per-task results, the finished-blocks ticket and the per-block partials.
WorkspaceBuffers all_pairs_workspace(const at::Tensor& scores, int64_t T, int64_t chunks) {
  WorkspaceLayout layout;
  const int64_t o_loss = layout.take(T * 8), o_info = layout.take(T * 4 * 8);
  const int64_t o_done = layout.take(8), o_partials = layout.take(T * chunks * 2 * 8);
  WorkspaceBuffers out;
  out.storage = at::empty({layout.bytes}, scores.options().dtype(at::kByte));
  char* base = static_cast<char*>(out.storage.data_ptr());
  out.ws = Workspace{};
  out.ws.task_loss = reinterpret_cast<double*>(base + o_loss);
  out.ws.task_info = reinterpret_cast<int64_t*>(base + o_info);
  out.ws.done = reinterpret_cast<unsigned int*>(base + o_done);
  out.ws.partials = reinterpret_cast<double*>(base + o_partials);
  return out;
}

WorkspaceBuffers mining_workspace(const at::Tensor& scores, int64_t B, int64_t T, const MiningArgs& m) {
  WorkspaceLayout layout;
  const int64_t o_loss = layout.take(T * 8), o_info = layout.take(T * 4 * 8);
  const int64_t o_s = layout.take(T * B * 8), o_y = layout.take(T * B * 4);
  const int64_t o_row = layout.take(T * B * 4), o_pos = layout.take(T * B * 4);
  const int64_t o_a = layout.take(T * m.cap * 4), o_b = layout.take(T * m.cap * 4);
  const int64_t o_dl = layout.take(T * m.cap * 8), o_draws = layout.take(T * m.cap * 8);
  const int64_t o_table = m.table_in_smem ? -1 : layout.take(T * m.table_cap * 8);
  WorkspaceBuffers out;
  out.storage = at::empty({layout.bytes}, scores.options().dtype(at::kByte));
  char* base = static_cast<char*>(out.storage.data_ptr());
  Workspace& ws = out.ws;
  ws = Workspace{};
  ws.task_loss = reinterpret_cast<double*>(base + o_loss);
  ws.task_info = reinterpret_cast<int64_t*>(base + o_info);
  ws.comp_s = reinterpret_cast<double*>(base + o_s);
  ws.comp_y = reinterpret_cast<int*>(base + o_y);
  ws.comp_row = reinterpret_cast<int*>(base + o_row);
  ws.pos_of_row = reinterpret_cast<int*>(base + o_pos);
  ws.kept_a = reinterpret_cast<int*>(base + o_a);
  ws.kept_b = reinterpret_cast<int*>(base + o_b);
  ws.kept_dl = reinterpret_cast<double*>(base + o_dl);
  ws.draws = reinterpret_cast<int64_t*>(base + o_draws);
  ws.table = o_table < 0 ? nullptr : reinterpret_cast<int64_t*>(base + o_table);
  return out;
}

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
      kept_grad_kernel<scalar_t><<<rows_grid, kRowThreads, 0, stream>>>(
          B, int(T), reduction, m.cap, buffers.ws, pair_grad.mutable_data_ptr<scalar_t>(),
          loss.mutable_data_ptr<scalar_t>(), counts.mutable_data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
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
}  // namespace spinerank

TORCH_LIBRARY_IMPL(spinerank_ext, CUDA, m) {
  m.impl("pairwise_rank_loss", &spinerank::pairwise_rank_loss_cuda);
  m.impl("mined_pairs", &spinerank::mined_pairs_cuda);
}
