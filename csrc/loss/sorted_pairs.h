// The all-pairs squared-hinge loss without visiting pairs, O(G^2 n log n) per
// task (G grades, n valid samples), shared by the CPU and CUDA kernels.
//
// With each grade group's scores sorted, the pairs of a sample `a` of grade
// c_hi with grade c_lo < c_hi that violate the margin m (m - (s_a - s_b) > 0)
// are a contiguous run of the sorted c_lo group: its top scores. Their hinge
// values h_b = (m - x_a) + x_b then sum from the run's count, sum and sum of
// squares (range sums of the group):
//   sum_b h_b^2 = cnt u^2 + 2 u S1 + S2,  sum_b h_b = cnt u + S1,  u = m - x_a.
// Likewise the violating partners of a sample b of grade c_lo are the bottom
// scores of the c_hi group. Every pair that the direct loop gives a non-zero
// hinge is found by the same floating-point test on the same scores, so only
// the summation differs from the direct path.
//
// Cancellation: x are scores centred on the task mean and every sum is in
// double, so the terms above stay of the size of the score spread, not of the
// scores themselves.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/hd.h"
#include "loss/pair_math.h"

namespace spinerank {

// The direct path's test for a hinge pair (more severe score s_hi) with margin m.
SPINERANK_HD bool hinge_violated(double m, double s_hi, double s_lo) {
  return m - (s_hi - s_lo) > 0.0;
}

// In lo[0..n) sorted ascending: the first index whose pair with s_hi violates
// the margin (n if none). The test is monotone in s_lo, so this is a bisection.
SPINERANK_HD int64_t first_violating_lo(const double* lo, int64_t n, double m, double s_hi) {
  int64_t l = 0, r = n;
  while (l < r) {
    const int64_t mid = l + (r - l) / 2;
    if (hinge_violated(m, s_hi, lo[mid])) {
      r = mid;
    } else {
      l = mid + 1;
    }
  }
  return l;
}

// In hi[0..n) sorted ascending: how many leading entries violate the margin
// with s_lo (the test is true, then false, as s_hi grows).
SPINERANK_HD int64_t violating_hi_count(const double* hi, int64_t n, double m, double s_lo) {
  int64_t l = 0, r = n;
  while (l < r) {
    const int64_t mid = l + (r - l) / 2;
    if (hinge_violated(m, hi[mid], s_lo)) {
      l = mid + 1;
    } else {
      r = mid;
    }
  }
  return l;
}

// sum (u + x_k) and sum (u + x_k)^2 over cnt partners with sum x = s1 and
// sum x^2 = s2.
struct ShiftedSums {
  double sum, sum_sq;
};
SPINERANK_HD ShiftedSums shifted_sums(double u, int64_t cnt, double s1, double s2) {
  const double c = double(cnt);
  return {c * u + s1, c * u * u + 2.0 * u * s1 + s2};
}

// ---------------------------------------------------------------------------
// One sorted row at a time: the device-generic form of the sorted path
// (csrc/loss/sorted_pairs_generic.h), where every (task, sorted position) is
// computed on its own, by a CUDA thread or a CPU loop.

// A task's samples sorted by (grade, score) with the sums that the formulas
// above need, all (T, B) row-major. Only the grades present form groups, in
// increasing grade order (at most gcap = min(max K, B) of them per task): group
// c of task t has grade gval[t][c] and holds positions start[t][c] ..
// start[t][c + 1] - 1; groups 0 .. ngroups[t] - 1 are the task's; missing
// samples form the last group (index gcap) and are skipped. Nothing is sized
// or looped by K, which enters through 1 / (K_t - 1) only.
struct SortedRows {
  const double* s;        // sorted scores (the violation test sees the raw scores)
  const double* x;        // the same, centred on the task mean (0 for missing samples)
  const double* cum1;     // inclusive prefix sums of x along the row
  const double* cum2;     // inclusive prefix sums of x^2
  const int64_t* y;       // group of each sorted position
  const int64_t* start;   // (T, gcap + 2) group starts
  const int64_t* gval;    // (T, gcap + 1) the grade of each group
  const int64_t* ngroups; // (T,) the number of groups (grades present)
  const int64_t* ks;      // (T,) K_t
  const int64_t* n_dis;   // (T,) ordinal pairs of the task, for dis_factor (pair_math.h)
  const int64_t* n_sim;   // (T,) similar pairs, for sim_factor
  double* g;              // out: d loss_t / d s at each sorted position
  double* l;              // out: the position's share of loss_t
  int8_t* bad;            // out: a non-finite score (grades >= K_t are checked by the caller)
  int64_t B, T, gcap;
};

// Sum of v over positions [i, j) of a row from its inclusive prefix sums.
SPINERANK_HD double range_sum(const double* cum, int64_t i, int64_t j) {
  return i >= j ? 0.0 : cum[j - 1] - (i > 0 ? cum[i - 1] : 0.0);
}

// Position k of task t: its similar pairs in closed form (the group's
// variance), the violating partners in every lower group (this sample as the
// more severe side: it also carries those pairs' loss) and in every higher
// group (gradient only). The CPU's sorted path runs it too, one task at a time.
SPINERANK_HD void sorted_hinge_row(const SortedRows& r, const LossParams& p, int64_t t, int64_t k) {
  const int64_t row = t * r.B;
  const int64_t* start = r.start + t * (r.gcap + 2);
  const int64_t* gval = r.gval + t * (r.gcap + 1);
  const int64_t c = r.y[row + k];
  const int64_t K = r.ks[t];
  double g = 0.0, l = 0.0;
  int8_t bad = 0;
  if (c < r.gcap) {
    const double* s = r.s + row;
    const double* cum1 = r.cum1 + row;
    const double* cum2 = r.cum2 + row;
    const double s_k = s[k], x_k = r.x[row + k];
    bad = !is_finite(s_k);
    const double cd = dis_factor(p, r.n_dis[t], r.n_sim[t]), cs = sim_factor(p, r.n_dis[t], r.n_sim[t]);
    const double inv_km1 = 1.0 / double(K - 1);
    const int64_t m = start[c + 1] - start[c];
    const PairTerm<double> sim = similar_group_share(m, x_k - range_sum(cum1, start[c], start[c + 1]) / double(m));
    l += cs * sim.loss;
    g += cs * sim.dloss;
    const int64_t groups = r.ngroups[t] < r.gcap ? r.ngroups[t] : r.gcap;
    for (int64_t c2 = 0; c2 < groups; ++c2) {
      if (c2 == c) continue;
      const int64_t g0 = start[c2], g1 = start[c2 + 1];
      if (g0 == g1) continue;
      // Groups are in grade order: c2 < c is the lower grade.
      const double gap = grade_gap(gval[c] - gval[c2], inv_km1);
      const double margin = pair_margin(p, gap), w = pair_weight(p, gap);
      if (c2 < c) {  // this sample is the more severe side
        const int64_t j0 = g0 + first_violating_lo(s + g0, g1 - g0, margin, s_k);
        if (j0 == g1) continue;
        const ShiftedSums h = shifted_sums(margin - x_k, g1 - j0, range_sum(cum1, j0, g1), range_sum(cum2, j0, g1));
        l += cd * w * h.sum_sq;
        g -= cd * 2.0 * w * h.sum;
      } else {
        const int64_t cnt = violating_hi_count(s + g0, g1 - g0, margin, s_k);
        if (cnt == 0) continue;
        g += cd * 2.0 * w * (double(cnt) * (margin + x_k) - range_sum(cum1, g0, g0 + cnt));
      }
    }
  }
  r.g[row + k] = g;
  r.l[row + k] = l;
  r.bad[row + k] = bad;
}

}  // namespace spinerank
