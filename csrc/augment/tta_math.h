// The view grid of tta_views (SPEC §4), shared by the CPU and CUDA kernels.
// Header-only and usable from device code.
#pragma once

#include <cstdint>

#include "augment/crop_math.h"
#include "common/hd.h"

namespace spinerank {

// The grid travels to CUDA kernels by value as a kernel argument, so its lists
// have a fixed capacity (the struct is ~2 KB, well under the 4 KB argument limit).
constexpr int64_t kMaxTtaListSize = 64;

struct TtaGrid {
  int64_t n_flips, n_h, n_w, n_d;
  bool flips[kMaxTtaListSize];
  int64_t shifts_h[kMaxTtaListSize];
  int64_t shifts_w[kMaxTtaListSize];
  int64_t shifts_d[kMaxTtaListSize];
};

struct TtaView {
  bool flip;
  int64_t dz, dy, dx;
};

SPINERANK_HD int64_t tta_num_views(const TtaGrid& g) { return g.n_flips * g.n_h * g.n_w * g.n_d; }

// View v = ((f * |shifts_h| + a) * |shifts_w| + b) * |shifts_d| + c (SPEC §4).
SPINERANK_HD TtaView tta_view(const TtaGrid& g, int64_t v) {
  const int64_t c = v % g.n_d;
  v /= g.n_d;
  const int64_t b = v % g.n_w;
  v /= g.n_w;
  const int64_t a = v % g.n_h;
  const int64_t f = v / g.n_h;
  return {g.flips[f], g.shifts_d[c], g.shifts_h[a], g.shifts_w[b]};
}

// Source row and column of output pixel (i, j) of a view; the slice comes from
// source_slice(g, view.flip, view.dz, k). Each is valid iff in_range of its axis.
SPINERANK_HD int64_t tta_source_row(const CropGeometry& g, const TtaView& view, int64_t i) {
  return g.y0 + i + view.dy;
}
SPINERANK_HD int64_t tta_source_col(const CropGeometry& g, const TtaView& view, int64_t j) {
  return g.x0 + j + view.dx;
}

}  // namespace spinerank
