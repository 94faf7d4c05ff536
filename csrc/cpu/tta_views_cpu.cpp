// CPU kernel of tta_views (SPEC §4).
//
// Every output row is one contiguous run of an input row with fill on either
// side, so a row is two fills and one copy: no per-element index math.
// Fresh page faults, not the copy, dominate the time of a large output: see
// cpu/huge_pages.h and cpu/streaming_writes.h.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>

#include "augment/args.h"
#include "cpu/huge_pages.h"
#include "cpu/streaming_writes.h"

namespace spinerank {
namespace {

// A run of one output row, written with ordinary or non-temporal stores.
template <bool kStream, typename scalar_t>
void fill_run(scalar_t* out, int64_t n, scalar_t value) {
  if (n <= 0) return;
  if constexpr (kStream) {
    stream_fill(out, n, value);
  } else {
    std::fill_n(out, n, value);
  }
}

template <bool kStream, typename scalar_t>
void copy_run(const scalar_t* src, int64_t n, scalar_t* out) {
  if (n <= 0) return;
  if constexpr (kStream) {
    stream_copy_bytes(out, src, size_t(n) * sizeof(scalar_t));
  } else {
    std::copy_n(src, n, out);
  }
}

// Output slice k (h x w) of one view of one (sample, channel) volume (D x H x W).
template <bool kStream, typename scalar_t>
void tta_slice(const scalar_t* volume, scalar_t* out, const CropGeometry& g, const TtaView& view,
               int64_t k, scalar_t fill) {
  const int64_t z = source_slice(g, view.flip, view.dz, k);
  if (!in_range(z, g.D)) {
    fill_run<kStream>(out, g.h * g.w, fill);
    return;
  }
  const scalar_t* slice = volume + z * g.H * g.W;
  // Output columns [j_lo, j_hi) read inside the row; the same for every row.
  const int64_t x_first = tta_source_col(g, view, 0);
  const int64_t j_lo = std::clamp<int64_t>(-x_first, 0, g.w);
  const int64_t j_hi = std::clamp<int64_t>(g.W - x_first, j_lo, g.w);
  for (int64_t i = 0; i < g.h; ++i, out += g.w) {
    const int64_t y = tta_source_row(g, view, i);
    if (!in_range(y, g.H)) {
      fill_run<kStream>(out, g.w, fill);
      continue;
    }
    const scalar_t* row = slice + y * g.W;
    fill_run<kStream>(out, j_lo, fill);
    copy_run<kStream>(row + (x_first + j_lo), j_hi - j_lo, out + j_lo);
    fill_run<kStream>(out + j_hi, g.w - j_hi, fill);
  }
}

at::Tensor tta_views_cpu(const at::Tensor& vol, c10::IntArrayRef out_size,
                         const c10::List<bool>& flips, c10::IntArrayRef shifts_h,
                         c10::IntArrayRef shifts_w, c10::IntArrayRef shifts_d, double fill) {
  check_volume(vol);
  const CropGeometry g = check_out_size(vol, out_size);
  const TtaGrid grid = make_tta_grid(flips, shifts_h, shifts_w, shifts_d);
  const int64_t N = vol.size(0), C = vol.size(1), V = tta_num_views(grid);
  at::Tensor out = at::empty({N, V, C, g.d, g.h, g.w}, vol.options());
  if (out.numel() == 0) return out;
  advise_huge_pages(out.data_ptr(), out.nbytes());
  const at::Tensor src = vol.contiguous();

  // Tasks are output slices in the output's order: each thread writes one
  // contiguous range, which keeps first-touch page faults and writes local.
  // (Grouping the slices that read the same input slice was measured slower.)
  // A thread faults in its whole range of a large output, then streams into it
  // (cpu/streaming_writes.h).
  const bool stream = out.nbytes() >= kStreamingMinBytes;
  const int64_t slices = N * V * C * g.d;
  const int64_t slice_size = g.h * g.w;
  // ~32K elements per task: enough to amortise waking a thread.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / slice_size);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, vol.scalar_type(), "tta_views_cpu", [&] {
    const scalar_t* in = src.const_data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const scalar_t fill_value = static_cast<scalar_t>(fill);
    const int64_t volume_size = g.D * g.H * g.W;
    // Slices [begin, end) of the output, in order.
    auto write_slices = [&](auto streaming, int64_t begin, int64_t end) {
      for (int64_t s = begin; s < end; ++s) {
        // s = ((n * V + v) * C + ch) * d + k.
        const int64_t k = s % g.d;
        const int64_t nvc = s / g.d;
        const int64_t ch = nvc % C;
        const int64_t v = (nvc / C) % V;
        const int64_t n = nvc / C / V;
        tta_slice<decltype(streaming)::value>(in + (n * C + ch) * volume_size, o + s * slice_size,
                                              g, tta_view(grid, v), k, fill_value);
      }
    };
    at::parallel_for(0, slices, grain, [&](int64_t begin, int64_t end) {
      scalar_t* first = o + begin * slice_size;
      const size_t bytes = size_t(end - begin) * size_t(slice_size) * sizeof(scalar_t);
      if (stream && populate_for_streaming(first, bytes)) {
        write_slices(std::true_type{}, begin, end);
        stream_fence();
      } else {
        write_slices(std::false_type{}, begin, end);
      }
    });
  });
  return out;
}
static_assert(std::is_same_v<decltype(tta_views_cpu), TtaViewsSignature>);

}  // namespace
}  // namespace spinerank

TORCH_LIBRARY_IMPL(spinerank_ext, CPU, m) { m.impl("tta_views", &spinerank::tta_views_cpu); }
