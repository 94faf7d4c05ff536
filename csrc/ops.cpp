// Op schemas of the spinerank_ext library, registered once (the private
// tuning and testing ops in csrc/tuning.cpp). Kernels live in
// csrc/cpu/ and csrc/cuda/; the Autograd-key kernels in csrc/autograd.cpp; the
// fake (meta) kernels for torch.compile and torch.export in
// spinerank_ext/_ops.py.
#include <ATen/core/Tensor.h>
#include <ATen/ops/mul.h>
#include <torch/library.h>

TORCH_LIBRARY(spinerank_ext, m) {
  // Fused SpineRank loss (SPEC §3). Returns the reduced loss (a scalar, or (T,)
  // for task_reduction="none"), d loss / d scores for an upstream gradient of
  // one (B, T), and the kept (ordinal, similar) pair counts per task (T, 2).
  // max_pairs = -1 keeps all pairs; seed (int64 scalar) feeds the random part
  // of mining and may be None when max_pairs = -1. pair_normalization: "per_kind"
  // (ordinal and similar pair sums each over their count, SpineRank) or "all"
  // (both over the task's number of kept pairs, the published RankNet and
  // DeepRankSVM); see dis_factor in csrc/loss/pair_math.h.
  m.def(
      "pairwise_rank_loss(Tensor scores, Tensor grades, int[] num_grades, float scale, "
      "float margin_base, float margin_scale, float lambda_dis, float lambda_sim, "
      "bool severity_weight, str pair_fn, float sigma, int max_pairs, float hard_fraction, "
      "str task_reduction, Tensor? seed, str pair_normalization=\"per_kind\") -> "
      "(Tensor loss, Tensor pair_grad, Tensor counts)",
      {at::Tag::pt2_compliant_tag});
  // Scales the saved per-sample gradient by the upstream gradient.
  m.def("pairwise_rank_loss_backward(Tensor grad_loss, Tensor pair_grad) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // The pairs that mining keeps, as batch rows (T, max_pairs, 2) sorted by
  // (i, j), padded with -1: the selection the loss uses, for logging and tests.
  m.def(
      "mined_pairs(Tensor scores, Tensor grades, int[] num_grades, float margin_base, "
      "float margin_scale, int max_pairs, float hard_fraction, Tensor? seed) -> Tensor",
      {at::Tag::pt2_compliant_tag});
  // Test-time augmentation views (SPEC §4): vol (N, C, D, H, W) -> (N, V, C, d, h, w),
  // V = |flips| * |shifts_h| * |shifts_w| * |shifts_d|, fill outside the volume.
  m.def(
      "tta_views(Tensor vol, int[] out_size, bool[] flips, int[] shifts_h, int[] shifts_w, "
      "int[] shifts_d, float fill) -> Tensor",
      {at::Tag::pt2_compliant_tag});
  // Training augmentation (SPEC §5) with given per-sample parameters, params
  // (N, 7) as laid out in csrc/augment/augment_math.h: vol (N, C, D, H, W) ->
  // (out (N, C, d, h, w), flipped (N,) bool). Forward only.
  m.def("augment(Tensor vol, Tensor params, int[] out_size) -> (Tensor out, Tensor flipped)",
        {at::Tag::pt2_compliant_tag});
}

namespace {
// grad_loss is () or (T,); broadcasting over the batch dimension does the rest.
at::Tensor pairwise_rank_loss_backward(const at::Tensor& grad_loss, const at::Tensor& pair_grad) {
  return at::mul(pair_grad, grad_loss);
}
}  // namespace

// Device-generic: one elementwise product, any backend.
TORCH_LIBRARY_IMPL(spinerank_ext, CompositeExplicitAutograd, m) {
  m.impl("pairwise_rank_loss_backward", &pairwise_rank_loss_backward);
}
