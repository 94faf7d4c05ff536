// Per-sample geometry and per-voxel interpolation of augment (SPEC §5), shared
// by the CPU and CUDA kernels. Header-only and usable from device code.
//
// Output voxel (k, i, j) of a sample reads input slice
// source_slice(g, flip, dz, k) at the in-plane position
//   y = cy + (a u - b v),  x = cx + (b u + a v),
//   u = i - (h - 1) / 2,   v = j - (w - 1) / 2,
//   a = cos(theta) / scale, b = sin(theta) / scale,
//   (cy, cx) = (y0 + (h - 1) / 2 + dy, x0 + (w - 1) / 2 + dx):
// the crop, moved by (dy, dx), rotated by theta and zoomed by scale about its
// own centre. Positions are in input voxels (voxel centres at integers) and
// computed in double, so integer shifts land exactly on voxels.
//
// Non-finite parameters: a sample with any parameter NaN or +-inf, or with
// scale = 0 (1 / scale not finite), is all zeros with flipped = false; the
// other samples are unaffected (valid_params).
#pragma once

#include <cmath>
#include <cstdint>

#include "augment/crop_math.h"
#include "common/hd.h"

namespace spinerank {

// Interpolation and accumulation type: float for float, half and bfloat16.
template <typename scalar_t>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename scalar_t>
using acc_type = typename AccType<scalar_t>::type;

// Columns of the (N, 7) params tensor.
enum AugmentParam : int {
  kParamDz = 0,         // slice shift, rounded half up to an integer
  kParamFlip = 1,       // left-right (slice axis) flip when >= 0.5
  kParamIntensity = 2,  // added to the volume before resampling
  kParamDy = 3,         // in-plane translation, rows
  kParamDx = 4,         // in-plane translation, columns
  kParamScale = 5,      // isotropic zoom (> 1 magnifies)
  kParamRotation = 6,   // in-plane rotation, degrees
  kNumAugmentParams = 7
};

struct AugmentCoeffs {
  int64_t dz;
  bool flip;
  double intensity;
  double cy, cx;  // where the output crop centre reads from
  double a, b;    // cos(theta) / scale, sin(theta) / scale
};

// A shift that leaves every slice outside any volume; stands in for NaN and
// huge values, which must not reach a double -> int64 conversion (UB).
constexpr int64_t kFarAway = int64_t(1) << 50;

SPINERANK_HD int64_t round_half_up(double x) {
  const double r = floor(x + 0.5);
  return (r > -1e15 && r < 1e15) ? int64_t(r) : kFarAway;
}

// Whether a sample's parameters describe an augmentation: all seven finite
// and 1 / scale finite (scale != 0). A sample that fails this gives zeros
// everywhere and flipped = false (the same rule as spinerank_ext.reference).
SPINERANK_HD bool valid_params(const double* p) {
  bool ok = is_finite(1.0 / p[kParamScale]);
  for (int c = 0; c < kNumAugmentParams; ++c) ok = ok && is_finite(p[c]);
  return ok;
}

SPINERANK_HD AugmentCoeffs augment_coeffs(const double* p, const CropGeometry& g) {
  // Not a valid sample: every slice vacated (zeros), no flip, an in-plane
  // geometry that is finite so that the taps stay well defined.
  if (!valid_params(p)) return {kFarAway, false, 0.0, 0.0, 0.0, 0.0, 0.0};
  constexpr double kRadiansPerDegree = 3.14159265358979323846 / 180.0;
  const double theta = p[kParamRotation] * kRadiansPerDegree;
  const double inv_scale = 1.0 / p[kParamScale];
  return {round_half_up(p[kParamDz]),
          p[kParamFlip] >= 0.5,
          p[kParamIntensity],
          double(g.y0) + 0.5 * double(g.h - 1) + p[kParamDy],
          double(g.x0) + 0.5 * double(g.w - 1) + p[kParamDx],
          cos(theta) * inv_scale,
          sin(theta) * inv_scale};
}

// The four input voxels around one in-plane position and their bilinear
// weights: corners (y, x), (y, x + 1), (y + 1, x), (y + 1, x + 1) of the slice,
// offset = y * W + x. Corners outside the slice have weight 0 and a clear bit
// in `inside`; offset is meaningful only for the corners inside.
template <typename acc_t>
struct BilinearTap {
  int64_t offset;
  acc_t w[4];
  unsigned inside;
};

template <typename acc_t>
SPINERANK_HD BilinearTap<acc_t> bilinear_tap(const AugmentCoeffs& c, const CropGeometry& g,
                                             int64_t i, int64_t j) {
  const double u = double(i) - 0.5 * double(g.h - 1);
  const double v = double(j) - 0.5 * double(g.w - 1);
  const double ys = c.cy + (c.a * u - c.b * v);
  const double xs = c.cx + (c.b * u + c.a * v);
  BilinearTap<acc_t> t{0, {acc_t(0), acc_t(0), acc_t(0), acc_t(0)}, 0u};
  // Every corner with a non-zero weight is outside (also true for NaN, and it
  // keeps the int64 conversions below in range).
  if (!(ys > -1.0 && ys < double(g.H) && xs > -1.0 && xs < double(g.W))) return t;
  const double fy = floor(ys), fx = floor(xs);
  const double wy = ys - fy, wx = xs - fx;
  const int64_t y = int64_t(fy), x = int64_t(fx);
  // Here -1 <= y <= H - 1 and -1 <= x <= W - 1.
  const bool top = y >= 0, bottom = y + 1 < g.H, left = x >= 0, right = x + 1 < g.W;
  t.offset = y * g.W + x;
  if (top && left) t.w[0] = acc_t((1.0 - wy) * (1.0 - wx)), t.inside |= 1u;
  if (top && right) t.w[1] = acc_t((1.0 - wy) * wx), t.inside |= 2u;
  if (bottom && left) t.w[2] = acc_t(wy * (1.0 - wx)), t.inside |= 4u;
  if (bottom && right) t.w[3] = acc_t(wy * wx), t.inside |= 8u;
  return t;
}

// One output voxel: the bilinear interpolation at `t` of slice + intensity,
// with zero outside the slice, so the offset does not leak outside the volume
// either. With weights (1, 0, 0, 0) and intensity 0 it is the voxel itself,
// bit for bit.
template <typename acc_t, typename scalar_t>
SPINERANK_HD acc_t bilinear_sample(const scalar_t* slice, int64_t W, const BilinearTap<acc_t>& t,
                                   acc_t intensity) {
  const int64_t o = t.offset;
  if (t.inside == 15u) {  // the common case: all four corners inside
    return t.w[0] * acc_t(slice[o]) + t.w[1] * acc_t(slice[o + 1]) +
           t.w[2] * acc_t(slice[o + W]) + t.w[3] * acc_t(slice[o + W + 1]) + intensity;
  }
  acc_t value(0), weight(0);
  if (t.inside & 1u) value += t.w[0] * acc_t(slice[o]), weight += t.w[0];
  if (t.inside & 2u) value += t.w[1] * acc_t(slice[o + 1]), weight += t.w[1];
  if (t.inside & 4u) value += t.w[2] * acc_t(slice[o + W]), weight += t.w[2];
  if (t.inside & 8u) value += t.w[3] * acc_t(slice[o + W + 1]), weight += t.w[3];
  return value + intensity * weight;
}

}  // namespace spinerank
