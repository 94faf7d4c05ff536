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

#include <cstdint>

#include "hd.h"

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

}  // namespace spinerank
