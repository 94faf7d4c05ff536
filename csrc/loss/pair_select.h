// Building blocks of the CUDA kernels' pair selection (mining), written as
// host-device code so that tests/cpp/select_emulation.cpp can run the same
// pieces on the CPU: a GPU-free check that the device algorithm selects
// exactly the pairs of the CPU kernel.
#pragma once

#include <cstdint>

#include "common/hd.h"
#include "loss/pair_math.h"

namespace spinerank {

// How many of a task's P = n (n - 1) / 2 pairs mining keeps: all of them
// (keep_all) when P <= max_pairs, else max_pairs, the k_hard hardest and
// k_rand drawn from the rest.
struct KeepCounts {
  int64_t P, n_keep, k_hard, k_rand;
  bool keep_all;
};
SPINERANK_HD KeepCounts keep_counts(int64_t n, int64_t max_pairs, double hard_fraction) {
  KeepCounts c;
  c.P = n * (n - 1) / 2;
  c.keep_all = c.P <= max_pairs;
  c.n_keep = c.keep_all ? c.P : max_pairs;
  c.k_hard = c.keep_all ? 0 : hard_pair_count(max_pairs, hard_fraction);
  c.k_rand = c.n_keep - (c.keep_all ? c.n_keep : c.k_hard);
  return c;
}

// Walks pair indices q, q + step, ... of n samples as (a, b) without a square
// root per pair. Past the last pair, a stays at n - 1.
struct PairCursor {
  int64_t n, a, b;
  SPINERANK_HD PairCursor(int64_t n_, int64_t q) : n(n_), a(0), b(0) {
    if (n < 2) return;
    const PairAB ab = pair_from_index(n, q < n * (n - 1) / 2 ? q : 0);
    a = ab.a;
    b = ab.b;
  }
  SPINERANK_HD void advance(int64_t step) {
    b += step;
    while (b >= n && a < n - 1) {  // past the end of row a: into the next row
      b -= n;
      ++a;
      b += a + 1;
    }
  }
};

// Radix select, one 8-bit digit: given the counts of the 256 digit values among
// the candidates still in play, the digit of the `remaining`-th largest key,
// and how many candidates lie above that digit.
struct DigitPick {
  int digit;
  int64_t above;
};
SPINERANK_HD DigitPick pick_digit(const unsigned long long* count, int64_t remaining) {
  int64_t above = 0;
  for (int digit = 255; digit > 0; --digit) {
    if (above + int64_t(count[digit]) >= remaining) return {digit, above};
    above += int64_t(count[digit]);
  }
  return {0, above};
}

// Open-addressing set of non-negative int64 keys in a power-of-two table
// (-1 = empty slot). Written by one thread, read by many after a barrier.
SPINERANK_HD int64_t hash_slot(int64_t key, int64_t cap) {
  return int64_t((uint64_t(key) * 0x9E3779B97F4A7C15ull) >> 32) & (cap - 1);
}
SPINERANK_HD bool hash_insert(int64_t* table, int64_t cap, int64_t key) {
  for (int64_t h = hash_slot(key, cap);; h = (h + 1) & (cap - 1)) {
    if (table[h] == key) return false;
    if (table[h] == -1) {
      table[h] = key;
      return true;
    }
  }
}
SPINERANK_HD bool hash_contains(const int64_t* table, int64_t cap, int64_t key) {
  for (int64_t h = hash_slot(key, cap);; h = (h + 1) & (cap - 1)) {
    if (table[h] == key) return true;
    if (table[h] == -1) return false;
  }
}

// Floyd's draws, step one: the j-th candidate rank, j in [M - k, M).
SPINERANK_HD int64_t floyd_draw(uint64_t seed, int task, int64_t j) {
  return int64_t(uniform_below(mining_random(seed, task, uint64_t(j)), uint64_t(j + 1)));
}

// Step two, sequential: draw i (rank M - k + i) keeps its candidate unless it
// was drawn before, else takes its own rank; the set ends with k distinct ranks.
SPINERANK_HD void floyd_insert(int64_t* table, int64_t cap, int64_t draw, int64_t own_rank) {
  if (!hash_insert(table, cap, draw)) hash_insert(table, cap, own_rank);
}

// Hash set slots for k draws: a power of two >= 2k (load <= 1/2), at least 64.
SPINERANK_HD int64_t hash_capacity(int64_t k) {
  int64_t cap = 64;
  while (cap < 2 * k) cap *= 2;
  return cap;
}

}  // namespace spinerank
