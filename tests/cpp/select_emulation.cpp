// Runs the CUDA select kernel's algorithm (csrc/cuda/pair_selection_cuda.cu,
// steps 2-4: hard_cut, draw_random_pairs, sweep_kept_pairs) on the CPU, one
// simulated block of `threads` threads executed thread by thread, with the same
// building blocks (pair_select.h).
// tests/ext/test_pair_math_header.py compares its output with the CPU op's mined
// pairs: a GPU-free check of the device selection logic.
//
// stdin: n K max_pairs hard_fraction seed task margin_base margin_scale threads,
// then n lines "score grade" (the task's valid samples in batch order).
// stdout: the kept pairs "a b", in index order.
#include <cstdio>
#include <vector>

#include "loss/pair_math.h"
#include "loss/pair_select.h"

using namespace spinerank;

// Exclusive prefix sum over the simulated threads; returns the block total.
static int exclusive_scan(const std::vector<int>& in, std::vector<int>& out) {
  int total = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    out[i] = total;
    total += in[i];
  }
  return total;
}

int main() {
  long long n_in, K, max_pairs, seed_in;
  double hard_fraction, margin_base, margin_scale;
  int task, threads;
  if (std::scanf("%lld %lld %lld %lf %lld %d %lf %lf %d", &n_in, &K, &max_pairs, &hard_fraction,
                 &seed_in, &task, &margin_base, &margin_scale, &threads) != 9) return 2;
  const int64_t n = n_in;
  std::vector<double> s(n);
  std::vector<int> y(n);
  for (int64_t i = 0; i < n; ++i) {
    if (std::scanf("%lf %d", &s[i], &y[i]) != 2) return 2;
  }
  const uint64_t seed = uint64_t(seed_in);
  const LossParams p{1.0, margin_base, margin_scale, 1.0, 1.0, 1.0, true, PairFn::SquaredHinge};
  const double inv_km1 = 1.0 / double(K - 1);
  auto key_of = [&](int64_t a, int64_t b) {
    return hardness_key(mining_hardness(p, s[a], s[b], y[a] - y[b], inv_km1));
  };

  const KeepCounts kc = keep_counts(n, max_pairs, hard_fraction);
  const int64_t P = kc.P, n_keep = kc.n_keep, k_hard = kc.k_hard, k_rand = kc.k_rand;
  const bool keep_all = kc.keep_all;

  // Step 2: radix select.
  uint64_t threshold = 0;
  int64_t ties = 0;
  if (k_hard > 0) {
    uint64_t prefix = 0, mask = 0;
    int64_t remaining = k_hard;
    for (int shift = 56; shift >= 0; shift -= 8) {
      unsigned long long count[256] = {};
      for (int tid = 0; tid < threads; ++tid) {
        PairCursor c(n, tid);
        for (int64_t q = tid; q < P; q += threads, c.advance(threads)) {
          const uint64_t key = key_of(c.a, c.b);
          if ((key & mask) == prefix) ++count[(key >> shift) & 255];
        }
      }
      const DigitPick pick = pick_digit(count, remaining);
      prefix |= uint64_t(pick.digit) << shift;
      remaining -= pick.above;
      mask |= uint64_t(255) << shift;
    }
    threshold = prefix;
    ties = remaining;
  }

  // Step 3: Floyd's draws into the hash set.
  const int64_t cap = hash_capacity(k_rand);
  std::vector<int64_t> table(cap, -1);
  if (k_rand > 0) {
    const int64_t M = P - k_hard;
    std::vector<int64_t> draws(k_rand);
    for (int64_t i = 0; i < k_rand; ++i) draws[i] = floyd_draw(seed, task, M - k_rand + i);
    for (int64_t i = 0; i < k_rand; ++i) floyd_insert(table.data(), cap, draws[i], M - k_rand + i);
  }

  // Step 4: the sweep in index order, chunk by chunk, with three block scans.
  std::vector<PairCursor> cursor;
  for (int tid = 0; tid < threads; ++tid) cursor.emplace_back(n, tid);
  std::vector<int> tie(threads), above(threads), hard(threads), kept(threads);
  std::vector<int> tie_off(threads), hard_off(threads), kept_off(threads);
  int64_t ties_before = 0, hard_before = 0, kept_before = 0;
  std::vector<std::pair<int64_t, int64_t>> out(n_keep > 0 ? n_keep : 0);
  for (int64_t base = 0; base < P && kept_before < n_keep; base += threads) {
    for (int tid = 0; tid < threads; ++tid) {
      const int64_t q = base + tid;
      tie[tid] = above[tid] = 0;
      if (q < P && k_hard > 0) {
        const uint64_t key = key_of(cursor[tid].a, cursor[tid].b);
        above[tid] = key > threshold;
        tie[tid] = key == threshold;
      }
    }
    const int tie_total = exclusive_scan(tie, tie_off);
    for (int tid = 0; tid < threads; ++tid)
      hard[tid] = above[tid] || (tie[tid] && ties_before + tie_off[tid] < ties);
    const int hard_total = exclusive_scan(hard, hard_off);
    for (int tid = 0; tid < threads; ++tid) {
      const int64_t q = base + tid;
      const bool in = q < P;
      kept[tid] = keep_all ? int(in) : hard[tid];
      if (in && !keep_all && !hard[tid] && k_rand > 0)
        kept[tid] = hash_contains(table.data(), cap, q - (hard_before + hard_off[tid]));
    }
    const int kept_total = exclusive_scan(kept, kept_off);
    for (int tid = 0; tid < threads; ++tid) {
      const int64_t o = kept_before + kept_off[tid];
      if (kept[tid] && o < n_keep) out[o] = {cursor[tid].a, cursor[tid].b};
      cursor[tid].advance(threads);
    }
    ties_before += tie_total;
    hard_before += hard_total;
    kept_before += kept_total;
  }
  if (kept_before != n_keep) return 3;  // the sweep must find exactly n_keep pairs
  for (const auto& ab : out) std::printf("%lld %lld\n", (long long)ab.first, (long long)ab.second);
  return 0;
}
