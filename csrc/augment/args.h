// Argument checks of tta_views and augment, shared by the CPU and CUDA entry
// points: the last line, for calls through torch.ops. The public API and the
// fake kernels check first (spinerank_ext/_validate.py); both layers name a
// problem with the same key phrase ("<what must hold>, got <what came>").
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/List.h>
#include <c10/util/Exception.h>

#include <string_view>

#include "augment/augment_math.h"
#include "augment/crop_math.h"
#include "augment/tta_math.h"

namespace spinerank {

// The C++ signatures of the ops (schemas: csrc/ops.cpp).
using TtaViewsSignature = at::Tensor(const at::Tensor& vol, c10::IntArrayRef out_size,
                                     const c10::List<bool>& flips, c10::IntArrayRef shifts_h,
                                     c10::IntArrayRef shifts_w, c10::IntArrayRef shifts_d,
                                     double fill);
using AugmentSignature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor& vol,
                                                            const at::Tensor& params,
                                                            c10::IntArrayRef out_size);

// Shifts are bounded so that crop offset + index + shift cannot overflow int64.
constexpr int64_t kMaxShift = int64_t(1) << 40;

inline void check_volume(const at::Tensor& vol) {
  TORCH_CHECK_VALUE(vol.dim() == 5, "vol must have shape (N, C, D, H, W), got ", vol.dim(),
                    " dimension(s) ", vol.sizes());
  TORCH_CHECK_VALUE(at::isFloatingType(vol.scalar_type()), "vol must be a floating tensor, got ",
                    vol.scalar_type());
}

inline CropGeometry check_out_size(const at::Tensor& vol, c10::IntArrayRef out_size) {
  TORCH_CHECK_VALUE(out_size.size() == 3, "out_size must be (d, h, w), got ", out_size);
  TORCH_CHECK_VALUE(out_size[0] > 0 && out_size[1] > 0 && out_size[2] > 0,
                    "out_size must be positive, got ", out_size);
  return make_crop_geometry(vol.size(2), vol.size(3), vol.size(4), out_size[0], out_size[1],
                            out_size[2]);
}

inline void check_list_size(std::string_view name, size_t size) {
  TORCH_CHECK_VALUE(size >= 1, name, " must not be empty");
  TORCH_CHECK_VALUE(int64_t(size) <= kMaxTtaListSize, name, " has ", size, " entries, at most ",
                    kMaxTtaListSize, " are supported");
}

inline void copy_shifts(std::string_view name, c10::IntArrayRef shifts, int64_t* out) {
  check_list_size(name, shifts.size());
  for (size_t i = 0; i < shifts.size(); ++i) {
    TORCH_CHECK_VALUE(shifts[i] > -kMaxShift && shifts[i] < kMaxShift, name, "[", i, "] = ",
                      shifts[i], " is out of range (|shift| < 2^40)");
    out[i] = shifts[i];
  }
}

inline TtaGrid make_tta_grid(const c10::List<bool>& flips, c10::IntArrayRef shifts_h,
                             c10::IntArrayRef shifts_w, c10::IntArrayRef shifts_d) {
  TtaGrid g{};
  check_list_size("flips", flips.size());
  for (size_t i = 0; i < flips.size(); ++i) g.flips[i] = flips.get(i);
  copy_shifts("shifts_h", shifts_h, g.shifts_h);
  copy_shifts("shifts_w", shifts_w, g.shifts_w);
  copy_shifts("shifts_d", shifts_d, g.shifts_d);
  g.n_flips = int64_t(flips.size());
  g.n_h = int64_t(shifts_h.size());
  g.n_w = int64_t(shifts_w.size());
  g.n_d = int64_t(shifts_d.size());
  return g;
}

inline void check_params(const at::Tensor& vol, const at::Tensor& params) {
  TORCH_CHECK_VALUE(params.dim() == 2 && params.size(0) == vol.size(0) &&
                        params.size(1) == kNumAugmentParams,
                    "params must have shape (N, 7) with N = ", vol.size(0), ", got ",
                    params.sizes());
  TORCH_CHECK_VALUE(at::isFloatingType(params.scalar_type()),
                    "params must be a floating tensor, got ", params.scalar_type());
  TORCH_CHECK_VALUE(params.device() == vol.device(), "params must be on the device of vol (",
                    vol.device(), "), got ", params.device());
}

}  // namespace spinerank
