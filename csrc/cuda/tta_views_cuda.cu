// CUDA kernel of tta_views (SPEC §4).
//
// One thread per output column (n, view, i, j): it decodes its view once and
// then writes that pixel of every (channel, slice), so the index math is
// amortised over C * d voxels. Consecutive threads own consecutive j, so
// reads and writes are coalesced. The geometry is csrc/augment/tta_math.h, the same
// functions as the CPU kernel.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "augment/args.h"

namespace spinerank {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // the rest is a grid-stride loop

// index_t: uint32_t when the column count fits, else uint64_t; the decode is
// the only per-thread division work. Memory offsets are always int64.
template <typename scalar_t, typename index_t>
__global__ void tta_views_kernel(const scalar_t* __restrict__ in, scalar_t* __restrict__ out,
                                 const CropGeometry g, const TtaGrid grid, const int64_t C,
                                 const index_t columns, const scalar_t fill) {
  const int64_t V = tta_num_views(grid);
  const index_t h = index_t(g.h), w = index_t(g.w), views = index_t(V);
  const index_t stride = index_t(gridDim.x) * blockDim.x;
  for (index_t col = index_t(blockIdx.x) * blockDim.x + threadIdx.x; col < columns; col += stride) {
    const int64_t j = int64_t(col % w);
    const index_t r = col / w;
    const int64_t i = int64_t(r % h);
    const int64_t v = int64_t((r / h) % views);
    const int64_t n = int64_t(r / h / views);
    const TtaView view = tta_view(grid, v);
    const int64_t y = tta_source_row(g, view, i), x = tta_source_col(g, view, j);
    const bool pixel_inside = in_range(y, g.H) && in_range(x, g.W);
    const int64_t plane = g.h * g.w;
    scalar_t* o = out + (n * V + v) * C * g.d * plane + i * g.w + j;
    for (int64_t ch = 0; ch < C; ++ch) {
      const scalar_t* volume = in + (n * C + ch) * g.D * g.H * g.W;
      for (int64_t k = 0; k < g.d; ++k) {
        const int64_t z = source_slice(g, view.flip, view.dz, k);
        o[(ch * g.d + k) * plane] =
            pixel_inside && in_range(z, g.D) ? volume[(z * g.H + y) * g.W + x] : fill;
      }
    }
  }
}

at::Tensor tta_views_cuda(const at::Tensor& vol, c10::IntArrayRef out_size,
                          const c10::List<bool>& flips, c10::IntArrayRef shifts_h,
                          c10::IntArrayRef shifts_w, c10::IntArrayRef shifts_d, double fill) {
  check_volume(vol);
  const CropGeometry g = check_out_size(vol, out_size);
  const TtaGrid grid = make_tta_grid(flips, shifts_h, shifts_w, shifts_d);
  const c10::cuda::CUDAGuard guard(vol.device());
  const int64_t N = vol.size(0), C = vol.size(1), V = tta_num_views(grid);
  at::Tensor out = at::empty({N, V, C, g.d, g.h, g.w}, vol.options());
  if (out.numel() == 0) return out;
  const at::Tensor src = vol.contiguous();

  const int64_t columns = N * V * g.h * g.w;
  const int64_t blocks = std::min((columns + kThreads - 1) / kThreads, kMaxBlocks);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, vol.scalar_type(), "tta_views_cuda", [&] {
    const scalar_t* in = src.const_data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const scalar_t fill_value = static_cast<scalar_t>(fill);
    if (columns <= int64_t(UINT32_MAX) - kThreads * kMaxBlocks) {
      tta_views_kernel<scalar_t, uint32_t><<<blocks, kThreads, 0, stream>>>(
          in, o, g, grid, C, uint32_t(columns), fill_value);
    } else {
      tta_views_kernel<scalar_t, uint64_t><<<blocks, kThreads, 0, stream>>>(
          in, o, g, grid, C, uint64_t(columns), fill_value);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}
static_assert(std::is_same_v<decltype(tta_views_cuda), TtaViewsSignature>);

}  // namespace
}  // namespace spinerank

TORCH_LIBRARY_IMPL(spinerank_ext, CUDA, m) { m.impl("tta_views", &spinerank::tta_views_cuda); }
