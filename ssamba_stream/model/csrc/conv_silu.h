// A Mamba layer's depthwise conv and SiLU on CPU, channels-last (conv_silu.cpp).
#pragma once

#include <torch/extension.h>

#include <optional>
#include <vector>

namespace ssamba {

// u = silu(bias + depthwise conv1d(x)) for x (batch, L, d) with contiguous channels, weight (K, d)
// contiguous, bias (d) or none. block 0: the causal conv (tap k of step t reads step
// t - (K - 1) + k). block > 0: the conv of each time-flipped block of that many steps, in time
// order (tap k of step t reads step t + (K - 1) - k of t's own block). Taps outside x read zeros,
// or the history (batch, K - 1, d), contiguous: the K - 1 inputs before x in scan order, oldest
// first (only with block 0, or one block over all of x). Returns u (batch, L, d), contiguous.
torch::Tensor conv_silu_forward(const torch::Tensor& x, const torch::Tensor& weight,
                                const std::optional<torch::Tensor>& bias, int64_t block,
                                const std::optional<torch::Tensor>& history);

// Gradients of x (batch, L, d) and of the history (batch, K - 1, d; empty without one), and
// per-task partial sums of the weight's (tasks, K, d) and the bias's (tasks, d) gradients for the
// caller to add up; grad_out (batch, L, d) contiguous.
std::vector<torch::Tensor> conv_silu_backward(const torch::Tensor& x, const torch::Tensor& weight,
                                              const std::optional<torch::Tensor>& bias, int64_t block,
                                              const std::optional<torch::Tensor>& history,
                                              const torch::Tensor& grad_out);

}  // namespace ssamba
