// CUDA kernel of augment (SPEC §5).
//
// One thread per output pixel (n, i, j): it derives the sample's geometry and
// the pixel's bilinear taps once (csrc/augment/augment_math.h, the same functions as
// the CPU kernel) and applies them to every (channel, slice). Consecutive
// threads own consecutive j, so writes are coalesced and the four reads of
// neighbouring threads share cache lines.
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

// params: (N, 7) float64, contiguous. flipped[n] is written by pixel (0, 0).
template <typename scalar_t, typename index_t>
__global__ void augment_kernel(const scalar_t* __restrict__ in, const double* __restrict__ params,
                               scalar_t* __restrict__ out, bool* __restrict__ flipped,
                               const CropGeometry g, const int64_t C, const index_t pixels) {
  using acc_t = acc_type<scalar_t>;
  const index_t h = index_t(g.h), w = index_t(g.w);
  const index_t stride = index_t(gridDim.x) * blockDim.x;
  for (index_t pix = index_t(blockIdx.x) * blockDim.x + threadIdx.x; pix < pixels; pix += stride) {
    const int64_t j = int64_t(pix % w);
    const index_t r = pix / w;
    const int64_t i = int64_t(r % h);
    const int64_t n = int64_t(r / h);
    const AugmentCoeffs c = augment_coeffs(params + n * kNumAugmentParams, g);
    if (i == 0 && j == 0) flipped[n] = c.flip;
    const BilinearTap<acc_t> tap = bilinear_tap<acc_t>(c, g, i, j);
    const acc_t intensity = acc_t(c.intensity);
    const int64_t plane = g.h * g.w;
    scalar_t* o = out + n * C * g.d * plane + i * g.w + j;
    for (int64_t ch = 0; ch < C; ++ch) {
      const scalar_t* volume = in + (n * C + ch) * g.D * g.H * g.W;
      for (int64_t k = 0; k < g.d; ++k) {
        const int64_t z = source_slice(g, c.flip, c.dz, k);
        o[(ch * g.d + k) * plane] =
            in_range(z, g.D) ? scalar_t(bilinear_sample(volume + z * g.H * g.W, g.W, tap, intensity))
                             : scalar_t(0);  // a vacated slice
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor> augment_cuda(const at::Tensor& vol, const at::Tensor& params,
                                                c10::IntArrayRef out_size) {
  check_volume(vol);
  const CropGeometry g = check_out_size(vol, out_size);
  check_params(vol, params);
  const c10::cuda::CUDAGuard guard(vol.device());
  const int64_t N = vol.size(0), C = vol.size(1);
  at::Tensor out = at::empty({N, C, g.d, g.h, g.w}, vol.options());
  at::Tensor flipped = at::empty({N}, vol.options().dtype(at::kBool));
  // N = 0 is the only empty case: with C = 0 the kernel still writes flipped.
  if (N == 0) return {out, flipped};
  const at::Tensor src = vol.contiguous();
  const at::Tensor p = params.to(at::kDouble).contiguous();

  const int64_t pixels = N * g.h * g.w;
  const int64_t blocks = std::min((pixels + kThreads - 1) / kThreads, kMaxBlocks);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, vol.scalar_type(), "augment_cuda", [&] {
    const scalar_t* in = src.const_data_ptr<scalar_t>();
    const double* pp = p.const_data_ptr<double>();
    scalar_t* o = out.data_ptr<scalar_t>();
    bool* fp = flipped.data_ptr<bool>();
    if (pixels <= int64_t(UINT32_MAX) - kThreads * kMaxBlocks) {
      augment_kernel<scalar_t, uint32_t><<<blocks, kThreads, 0, stream>>>(in, pp, o, fp, g, C,
                                                                         uint32_t(pixels));
    } else {
      augment_kernel<scalar_t, uint64_t><<<blocks, kThreads, 0, stream>>>(in, pp, o, fp, g, C,
                                                                         uint64_t(pixels));
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, flipped};
}
static_assert(std::is_same_v<decltype(augment_cuda), AugmentSignature>);

}  // namespace
}  // namespace spinerank

TORCH_LIBRARY_IMPL(spinerank_ext, CUDA, m) { m.impl("augment", &spinerank::augment_cuda); }
