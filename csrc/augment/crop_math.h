// Crop geometry shared by tta_views and augment (SPEC §4, §5), on every backend.
// Header-only and usable from device code.
#pragma once

#include <cstdint>

#include "common/hd.h"

namespace spinerank {

// Python's a // b (rounds towards -inf) for b > 0: SPEC §4 writes the crop
// offsets as (D - d) // 2, which is negative when the crop is the larger one.
SPINERANK_HD int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

SPINERANK_HD bool in_range(int64_t index, int64_t size) { return index >= 0 && index < size; }

// An input of (D, H, W) voxels per channel cropped to (d, h, w) around its
// centre: the crop starts at (z0, y0, x0) before any shift.
struct CropGeometry {
  int64_t D, H, W;
  int64_t d, h, w;
  int64_t z0, y0, x0;
};

SPINERANK_HD CropGeometry make_crop_geometry(int64_t D, int64_t H, int64_t W, int64_t d, int64_t h,
                                             int64_t w) {
  return {D, H, W, d, h, w, floor_div(D - d, 2), floor_div(H - h, 2), floor_div(W - w, 2)};
}

// The input slice that output slice k shows: the crop window shifted by dz,
// read backwards when flipped (a left-right flip of a sagittal stack).
// Outside [0, D) when the window leaves the volume.
SPINERANK_HD int64_t source_slice(const CropGeometry& g, bool flip, int64_t dz, int64_t k) {
  return g.z0 + (flip ? g.d - 1 - k : k) + dz;
}

}  // namespace spinerank
