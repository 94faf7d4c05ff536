// Per-pair math of the SpineRank loss (SPEC §3), shared by the CPU and CUDA
// kernels so that both backends evaluate the same formulas in the same order.
// Everything here is header-only, allocation-free and usable from device code.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/hd.h"

namespace spinerank {

enum class PairFn : int { SquaredHinge = 0, Logistic = 1 };

// How a task's pair sums become its loss (see dis_factor / sim_factor).
enum class PairNormalization : int { PerKind = 0, All = 1 };

// Loss hyper-parameters, as plain values so the struct can be passed to kernels.
struct LossParams {
  double scale;
  double margin_base;
  double margin_scale;
  double lambda_dis;
  double lambda_sim;
  double sigma;
  bool severity_weight;
  PairFn pair_fn;
  PairNormalization normalization = PairNormalization::PerKind;
};

template <typename acc_t>
struct PairTerm {
  acc_t loss;  // the pair's loss, before the per-task normalisation
  acc_t dloss;  // d loss / d delta, delta = s_i - s_j
};

// softplus(z) and its derivative sigmoid(z) from a single exp.
template <typename acc_t>
SPINERANK_HD PairTerm<acc_t> softplus_and_sigmoid(acc_t z) {
  const acc_t e = exp(-fabs(z));
  const acc_t sig = z >= acc_t(0) ? acc_t(1) / (acc_t(1) + e) : e / (acc_t(1) + e);
  return {(z > acc_t(0) ? z : acc_t(0)) + log1p(e), sig};
}

// Normalised grade gap g = |d| / (K - 1); inv_km1 = 1 / (K - 1). d is an int
// in the kernels, an int64 where grades of a bad task may be anything.
template <typename acc_t, typename int_t>
SPINERANK_HD acc_t grade_gap(int_t d, acc_t inv_km1) {
  return acc_t(d < 0 ? -d : d) * inv_km1;
}

template <typename acc_t>
SPINERANK_HD acc_t pair_margin(const LossParams& p, acc_t g) {
  return acc_t(p.margin_base) + acc_t(p.margin_scale) * g;
}

template <typename acc_t>
SPINERANK_HD acc_t pair_weight(const LossParams& p, acc_t g) {
  return p.severity_weight ? acc_t(p.scale) * g : acc_t(1);
}

// Ordinal pair (d != 0) of grade gap g. rdelta = r * (s_i - s_j), r = sign(d):
// how far the more severe sample scores above the other. Loss
// w * max(0, m - rdelta)^2 or w * softplus(-sigma * rdelta); dloss is
// d loss / d rdelta (so d loss / d s_i = r * dloss, d loss / d s_j = -r * dloss).
template <typename acc_t, PairFn F>
SPINERANK_HD PairTerm<acc_t> ordinal_pair(const LossParams& p, acc_t rdelta, acc_t g) {
  const acc_t w = pair_weight(p, g);
  if constexpr (F == PairFn::SquaredHinge) {
    const acc_t v = pair_margin(p, g) - rdelta;
    const acc_t h = v > acc_t(0) ? v : acc_t(0);
    return {w * h * h, acc_t(-2) * w * h};
  } else {
    const PairTerm<acc_t> sp = softplus_and_sigmoid(-acc_t(p.sigma) * rdelta);
    return {w * sp.loss, -w * acc_t(p.sigma) * sp.dloss};
  }
}

// Similar pair (d == 0): delta^2 pulls same-grade scores together. Summed over
// a grade group of n scores this is n * sum_a (s_a - mean)^2, with gradient
// 2 n (s_a - mean): the all-pairs kernels use that closed form.
template <typename acc_t>
SPINERANK_HD PairTerm<acc_t> similar_pair(acc_t delta) {
  return {delta * delta, acc_t(2) * delta};
}

// One sample's share of that closed form: in a group of m, with its score
// `centred` on the group mean, m * centred^2 of the loss and 2 m centred of
// the gradient.
SPINERANK_HD PairTerm<double> similar_group_share(int64_t m, double centred) {
  return {double(m) * centred * centred, 2.0 * double(m) * centred};
}

// The per-task loss from the accumulated pair sums over the kept pairs:
//   PerKind (SpineRank): L_t = lambda_dis * sum_dis / max(1, n_dis) + lambda_sim * sum_sim / max(1, n_sim);
//   All (the published RankNet and DeepRankSVM): L_t = (lambda_dis * sum_dis + lambda_sim * sum_sim)
//                                                      / max(1, n_dis + n_sim).
// The two factors also scale every pair's gradient.
SPINERANK_HD double dis_factor(const LossParams& p, int64_t n_dis, int64_t n_sim) {
  const int64_t n = p.normalization == PairNormalization::All ? n_dis + n_sim : n_dis;
  return p.lambda_dis / double(n > 1 ? n : 1);
}
SPINERANK_HD double sim_factor(const LossParams& p, int64_t n_dis, int64_t n_sim) {
  const int64_t n = p.normalization == PairNormalization::All ? n_dis + n_sim : n_sim;
  return p.lambda_sim / double(n > 1 ? n : 1);
}

// ---------------------------------------------------------------------------
// Mining. Pairs are numbered in (i, j) lexicographic order, i < j, over a
// task's valid samples in batch order.
//
// Hard part: larger hardness first; ties go to the smaller pair index (smaller
// i, then smaller j). hardness_key below makes that two integer comparisons.
//
// Random part: Floyd's algorithm (uniform sampling without replacement) over
// the non-hard pairs, fed by a Philox stream keyed by the seed and counted by
// (draw, task). The sample depends on (seed, task, candidates) only: not on
// thread count or backend.
struct Philox4x32 {
  uint32_t x, y, z, w;
};

// Philox4x32-10 (Salmon et al., SC'11), the generator of Random123 and cuRAND;
// tests/ext/test_pair_math_header.py checks Random123's known answers.
SPINERANK_HD Philox4x32 philox4x32_10(Philox4x32 ctr, uint32_t k0, uint32_t k1) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += W0;
      k1 += W1;
    }
    const uint64_t p0 = uint64_t(M0) * ctr.x;
    const uint64_t p1 = uint64_t(M1) * ctr.z;
    ctr = {uint32_t(p1 >> 32) ^ ctr.y ^ k0, uint32_t(p1), uint32_t(p0 >> 32) ^ ctr.w ^ k1,
           uint32_t(p0)};
  }
  return ctr;
}

// The draw-th 64-bit random number of a task's mining stream.
SPINERANK_HD uint64_t mining_random(uint64_t seed, int task, uint64_t draw) {
  const Philox4x32 r = philox4x32_10({uint32_t(draw), uint32_t(draw >> 32), uint32_t(task), 0u},
                                     uint32_t(seed), uint32_t(seed >> 32));
  return (uint64_t(r.x) << 32) | r.y;
}

// An integer in [0, n) from 64 random bits (multiply-high; bias <= n / 2^64).
SPINERANK_HD uint64_t uniform_below(uint64_t bits, uint64_t n) {
#if defined(__CUDA_ARCH__)
  return __umul64hi(bits, n);
#else
  return uint64_t((unsigned __int128)bits * n >> 64);
#endif
}

// Pairs (a, b), a < b, of n samples in lexicographic order: the first pair of
// row a has index a * (2n - a - 1) / 2.
SPINERANK_HD int64_t pair_row_offset(int64_t n, int64_t a) { return a * (2 * n - a - 1) / 2; }

// An unsigned key with the order of the double h (h not NaN; -0 counts as +0),
// so that "harder" is one integer comparison.
SPINERANK_HD uint64_t hardness_key(double h) {
  h += 0.0;  // -0.0 -> +0.0: equal hardness must give equal keys
  uint64_t bits;
  memcpy(&bits, &h, sizeof bits);
  return (bits >> 63) ? ~bits : bits | (uint64_t(1) << 63);
}

// Double arithmetic with every operation rounded on its own. nvcc fuses a * b + c
// into one FMA by default; mining must rank pairs identically on every backend,
// so its hardness is computed with these. (Host code is built with
// -ffp-contract=off, see CMakeLists.txt, so plain operators round separately.)
SPINERANK_HD double add_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
SPINERANK_HD double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

// Mining hardness of the pair (i, j), larger = harder, in double: m - r * delta
// for ordinal pairs (> 0: the margin is violated; satisfied pairs are negative)
// and |delta| for similar pairs; delta = s_i - s_j, d = y_i - y_j,
// inv_km1 = 1 / (K - 1). Scores enter as doubles, whatever their dtype.
// mining_margin is the ordinal pairs' m of grade difference d != 0, so that a
// loop can tabulate it per d.
SPINERANK_HD double mining_margin(const LossParams& p, int d, double inv_km1) {
  const double g = mul_rn(double(d < 0 ? -d : d), inv_km1);
  return add_rn(p.margin_base, mul_rn(p.margin_scale, g));
}
// The two kinds once known, for loops that hoist the margin and the sign
// r = +-1 (r * delta is exact, so every form rounds alike).
SPINERANK_HD double ordinal_hardness(double margin, double r, double delta) {
  return add_rn(margin, -(r * delta));
}
SPINERANK_HD double similar_hardness(double delta) { return fabs(delta); }
SPINERANK_HD double mining_hardness(const LossParams& p, double s_i, double s_j, int d,
                                    double inv_km1) {
  const double delta = add_rn(s_i, -s_j);
  if (d == 0) return similar_hardness(delta);
  return ordinal_hardness(mining_margin(p, d, inv_km1), d > 0 ? 1.0 : -1.0, delta);
}

// The pair of index q (lexicographic order over n samples) as (a, b), a < b.
// The square root gives a first guess; the loops make it exact.
struct PairAB {
  int64_t a, b;
};
SPINERANK_HD PairAB pair_from_index(int64_t n, int64_t q) {
  const double w = double(2 * n - 1);
  int64_t a = int64_t((w - sqrt(w * w - 8.0 * double(q))) * 0.5);
  if (a < 0) a = 0;
  if (a > n - 2) a = n - 2;
  while (a > 0 && pair_row_offset(n, a) > q) --a;
  while (a < n - 2 && pair_row_offset(n, a + 1) <= q) ++a;
  return {a, a + 1 + (q - pair_row_offset(n, a))};
}

// Split of max_pairs into the hard and the random part. Bounded in double
// before the conversion: for max_pairs near 2^63, floor(max_pairs * 1.0) is
// 2^63, which int64 cannot hold.
SPINERANK_HD int64_t hard_pair_count(int64_t max_pairs, double hard_fraction) {
  const double k = floor(double(max_pairs) * hard_fraction);
  if (!(k > 0.0)) return 0;
  return k >= double(max_pairs) ? max_pairs : int64_t(k);
}

}  // namespace spinerank
