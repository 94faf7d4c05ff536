// Autograd of pairwise_rank_loss, registered in C++ on the Autograd key.
//
// Why not torch.library.register_autograd: in torch 2.13 its Python wrapper
// costs ~50 us per forward and ~25 us per backward for this 15-argument schema
// (torch._library.utils.fill_defaults re-reads schema.arguments once per
// argument), three times the whole fused op call (~17 us) at B = 32. This is
// the same formula: forward saves d loss / d scores, backward scales it by the
// upstream gradient with pairwise_rank_loss_backward.
//
// Second-order gradients are not supported: the backward scales a saved
// per-sample gradient that autograd sees as a constant, so a second derivative
// through it would silently be zero. When the backward is recorded
// (create_graph=True), the gradient it returns is attached to an Error node
// instead, which raises as soon as anything differentiates through it (a
// gradient penalty, gradgradcheck, a Hessian); first-order results are the
// same with or without create_graph.
//
// tta_views and augment are forward-only: their Autograd kernels run the op
// below autograd, so their outputs never require grad, whatever the input.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/library.h>

#include "augment/args.h"
#include "loss/args.h"

namespace spinerank {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The op below the Autograd key: the CPU or CUDA kernel.
const auto& forward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("spinerank_ext::pairwise_rank_loss", "")
                             .typed<PairwiseRankLossSignature>();
  return op;
}

at::Tensor call_backward(const at::Tensor& grad_loss, const at::Tensor& pair_grad) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("spinerank_ext::pairwise_rank_loss_backward", "")
                             .typed<decltype(call_backward)>();
  return op.call(grad_loss, pair_grad);
}

class PairwiseRankLossFunction : public torch::autograd::Function<PairwiseRankLossFunction> {
 public:
  // Arguments in schema order; scores first.
  template <typename... Args>
  static variable_list forward(AutogradContext* ctx, Args&&... args) {
    static_assert(sizeof...(Args) == kNumInputs);
    at::AutoDispatchBelowADInplaceOrView guard;
    const at::Tensor& scores = first(args...);
    auto [loss, pair_grad, counts] = forward_op().call(std::forward<Args>(args)...);
    ctx->save_for_backward({pair_grad});
    // Only for the Error node's edge below: a reference, not a saved variable
    // (so no version check that first-order backward would not have made).
    if (scores.requires_grad()) ctx->saved_data["scores"] = scores;
    ctx->mark_non_differentiable({pair_grad, counts});
    return {loss, pair_grad, counts};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const at::Tensor pair_grad = ctx->get_saved_variables()[0];
    // Gradients flow to scores only; one entry per forward input.
    variable_list grads(kNumInputs);
    if (!at::GradMode::is_enabled()) {
      grads[0] = call_backward(grad_outputs[0], pair_grad);
      return grads;
    }
    // create_graph=True: the same value, whose graph leads to an Error node
    // with edges to scores and to the upstream gradient, so that any
    // differentiation through it reaches the node and raises.
    at::Tensor grad;
    {
      at::NoGradGuard no_grad;
      grad = call_backward(grad_outputs[0], pair_grad);
    }
    const auto saved = ctx->saved_data.find("scores");
    const at::Tensor scores = saved != ctx->saved_data.end() ? saved->second.toTensor() : at::Tensor();
    auto error = c10::make_intrusive<torch::autograd::Error>(
        kSecondOrderMessage, torch::autograd::collect_next_edges(scores, grad_outputs[0]));
    torch::autograd::create_gradient_edge(grad, std::move(error));
    grads[0] = grad;
    return grads;
  }

  static constexpr const char* kSecondOrderMessage =
      "second-order gradients are not supported by pairwise_rank_loss: its backward "
      "scales a saved first-order gradient, so differentiating the gradient again "
      "(create_graph=True, e.g. a gradient penalty, gradgradcheck or a Hessian) "
      "would silently give zero";

  static constexpr size_t kNumInputs = 16;

 private:
  template <typename First, typename... Rest>
  static const First& first(const First& a, const Rest&...) {
    return a;
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> pairwise_rank_loss_autograd(
    const at::Tensor& scores, const at::Tensor& grades, c10::IntArrayRef num_grades,
    double scale, double margin_base, double margin_scale, double lambda_dis,
    double lambda_sim, bool severity_weight, c10::string_view pair_fn, double sigma,
    int64_t max_pairs, double hard_fraction, c10::string_view task_reduction,
    const std::optional<at::Tensor>& seed, c10::string_view pair_normalization) {
  static_assert(std::is_same_v<decltype(pairwise_rank_loss_autograd), PairwiseRankLossSignature>);
  const variable_list out = PairwiseRankLossFunction::apply(
      scores, grades, num_grades, scale, margin_base, margin_scale, lambda_dis, lambda_sim,
      severity_weight, pair_fn, sigma, max_pairs, hard_fraction, task_reduction, seed,
      pair_normalization);
  return {out[0], out[1], out[2]};
}

// Forward-only ops: called below autograd, so the outputs have no history.
at::Tensor tta_views_autograd(const at::Tensor& vol, c10::IntArrayRef out_size,
                              const c10::List<bool>& flips, c10::IntArrayRef shifts_h,
                              c10::IntArrayRef shifts_w, c10::IntArrayRef shifts_d, double fill) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("spinerank_ext::tta_views", "")
                             .typed<TtaViewsSignature>();
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(vol, out_size, flips, shifts_h, shifts_w, shifts_d, fill);
}
static_assert(std::is_same_v<decltype(tta_views_autograd), TtaViewsSignature>);

std::tuple<at::Tensor, at::Tensor> augment_autograd(const at::Tensor& vol, const at::Tensor& params,
                                                    c10::IntArrayRef out_size) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("spinerank_ext::augment", "")
                             .typed<AugmentSignature>();
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(vol, params, out_size);
}
static_assert(std::is_same_v<decltype(augment_autograd), AugmentSignature>);

}  // namespace
}  // namespace spinerank

TORCH_LIBRARY_IMPL(spinerank_ext, Autograd, m) {
  m.impl("pairwise_rank_loss", &spinerank::pairwise_rank_loss_autograd);
  m.impl("tta_views", &spinerank::tta_views_autograd);
  m.impl("augment", &spinerank::augment_autograd);
}
