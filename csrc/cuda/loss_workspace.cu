// The host side of loss_workspace.cuh: the scratch memory of a call, one
// device allocation carved into the buffers of its kernels, and the checks and
// arguments the CUDA entries of pairwise_rank_loss and mined_pairs share.
#include "cuda/loss_workspace.cuh"

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "loss/pair_select.h"

namespace spinerank::cuda {
namespace {

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

}  // namespace

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

}  // namespace spinerank::cuda
