// CPU kernel of augment (SPEC §5).
//
// Work is split over output rows (n, i). A row's in-plane positions are the
// same for every channel and slice, so its bilinear taps are computed once
// and then applied to all C * d output rows that share them.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "augment/args.h"
#include "cpu/huge_pages.h"

namespace spinerank {
namespace {

// Output row i of every (channel, slice) of one sample; taps is scratch of w.
template <typename scalar_t, typename acc_t>
void augment_row(const scalar_t* volume, scalar_t* out, const CropGeometry& g, int64_t C,
                 const AugmentCoeffs& c, int64_t i, BilinearTap<acc_t>* taps) {
  for (int64_t j = 0; j < g.w; ++j) taps[j] = bilinear_tap<acc_t>(c, g, i, j);
  const acc_t intensity = acc_t(c.intensity);
  for (int64_t ch = 0; ch < C; ++ch) {
    for (int64_t k = 0; k < g.d; ++k) {
      scalar_t* o = out + ((ch * g.d + k) * g.h + i) * g.w;
      const int64_t z = source_slice(g, c.flip, c.dz, k);
      if (!in_range(z, g.D)) {  // a vacated slice
        std::fill_n(o, g.w, scalar_t(0));
        continue;
      }
      const scalar_t* slice = volume + (ch * g.D + z) * g.H * g.W;
      for (int64_t j = 0; j < g.w; ++j) o[j] = scalar_t(bilinear_sample(slice, g.W, taps[j], intensity));
    }
  }
}

std::tuple<at::Tensor, at::Tensor> augment_cpu(const at::Tensor& vol, const at::Tensor& params,
                                               c10::IntArrayRef out_size) {
  check_volume(vol);
  const CropGeometry g = check_out_size(vol, out_size);
  check_params(vol, params);
  const int64_t N = vol.size(0), C = vol.size(1);
  at::Tensor out = at::empty({N, C, g.d, g.h, g.w}, vol.options());
  at::Tensor flipped = at::empty({N}, vol.options().dtype(at::kBool));

  const at::Tensor p = params.to(at::kDouble).contiguous();
  std::vector<AugmentCoeffs> coeffs(N);
  bool* fp = flipped.data_ptr<bool>();
  for (int64_t n = 0; n < N; ++n) {
    coeffs[n] = augment_coeffs(p.const_data_ptr<double>() + n * kNumAugmentParams, g);
    fp[n] = coeffs[n].flip;
  }
  if (out.numel() == 0) return {out, flipped};
  advise_huge_pages(out.data_ptr(), out.nbytes());
  const at::Tensor src = vol.contiguous();

  const int64_t rows = N * g.h;
  // ~32K output elements per task: enough to amortise waking a thread.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / (C * g.d * g.w));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, vol.scalar_type(), "augment_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    const scalar_t* in = src.const_data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const int64_t in_sample = C * g.D * g.H * g.W, out_sample = C * g.d * g.h * g.w;
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
      std::vector<BilinearTap<acc_t>> taps(g.w);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t n = r / g.h, i = r % g.h;
        augment_row(in + n * in_sample, o + n * out_sample, g, C, coeffs[n], i, taps.data());
      }
    });
  });
  return {out, flipped};
}
static_assert(std::is_same_v<decltype(augment_cpu), AugmentSignature>);

}  // namespace
}  // namespace spinerank

TORCH_LIBRARY_IMPL(spinerank_ext, CPU, m) { m.impl("augment", &spinerank::augment_cpu); }
