// A Mamba layer's depthwise conv and SiLU on CPU, forward and backward (declared in conv_silu.h).
//
// Channels-last: the layer's in_proj output is (batch, L, 2d), and its conv input x is a view of it.
// Every loop runs over a contiguous row of d channels, so it vectorises, and the output comes out
// (batch, L, d), the layout x_proj reads without a transposing copy. Tasks are runs of kSteps time
// steps of one batch element, spread over threads by at::parallel_for; the weight and bias
// gradients are summed per task, then across tasks by the caller, so no two tasks write the same
// memory. The pre-activation is recomputed in the backward instead of being stored.

#include "conv_silu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>

#include "fast_math.h"

namespace ssamba {
namespace {

using torch::Tensor;

constexpr int64_t kSteps = 64;

template <typename T>
struct Conv {
  const T* x;
  int64_t sb, st;  // x's batch and time strides; channels are contiguous
  const T* w;      // (K, d)
  const T* bias;   // (d) or null
  const T* hist;   // (batch, K - 1, d) or null
  int64_t batch, len, dim, width, block;

  Conv(const Tensor& x_, const Tensor& w_, const std::optional<Tensor>& bias_, int64_t block_,
       const std::optional<Tensor>& hist_)
      : x(x_.data_ptr<T>()),
        sb(x_.stride(0)),
        st(x_.stride(1)),
        w(w_.data_ptr<T>()),
        bias(bias_ ? bias_->data_ptr<T>() : nullptr),
        hist(hist_ ? hist_->data_ptr<T>() : nullptr),
        batch(x_.size(0)),
        len(x_.size(1)),
        dim(x_.size(2)),
        width(w_.size(0)),
        block(block_) {}

  int64_t tasks_per_batch() const { return (len + kSteps - 1) / kSteps; }

  // Tap k of step t: the input step it reads, or, where that lies outside x, a history slot j in
  // [0, K - 1) as -1 - j, or kNone where it reads a zero.
  static constexpr int64_t kNone = std::numeric_limits<int64_t>::min();

  int64_t source(int64_t t, int64_t k) const {
    if (!block) {
      const int64_t s = t - (width - 1) + k;
      return s >= 0 ? s : hist ? -1 - (width - 1 + s) : kNone;
    }
    const int64_t s = t + (width - 1) - k;
    if (s < len) return s / block == t / block ? s : kNone;
    return hist ? -1 - (width - 2 - (s - len)) : kNone;  // past the end: the history, in scan order
  }

  // The output step whose tap k reads input step s, or -1 where none does.
  int64_t target(int64_t s, int64_t k) const {
    if (!block) {
      const int64_t t = s + (width - 1) - k;
      return t < len ? t : -1;
    }
    const int64_t t = s - (width - 1) + k;
    return t >= 0 && s / block == t / block ? t : -1;
  }

  // The channels that tap k of step t reads, or null for zeros.
  const T* tap(int64_t b, int64_t t, int64_t k) const {
    const int64_t s = source(t, k);
    if (s >= 0) return row(b, s);
    return s == kNone ? nullptr : hist + (b * (width - 1) + (-1 - s)) * dim;
  }

  const T* row(int64_t b, int64_t t) const { return x + b * sb + t * st; }

  // Step t's pre-activation, bias + sum_k w_k x_source(t, k), into out (d).
  void pre(int64_t b, int64_t t, T* __restrict__ out) const {
    for (int64_t c = 0; c < dim; ++c) out[c] = bias ? bias[c] : T(0);
    for (int64_t k = 0; k < width; ++k) {
      const T* __restrict__ xs = tap(b, t, k);
      if (!xs) continue;
      const T* __restrict__ wk = w + k * dim;
      for (int64_t c = 0; c < dim; ++c) out[c] += wk[c] * xs[c];
    }
  }

  // Calls f(b, t) for each step of task i, a run of kSteps steps of one batch element.
  template <typename F>
  void each_step(int64_t i, F&& f) const {
    const int64_t b = i / tasks_per_batch(), t0 = (i % tasks_per_batch()) * kSteps;
    for (int64_t t = t0; t < std::min(len, t0 + kSteps); ++t) f(b, t);
  }
};

void check(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias, int64_t block,
           const std::optional<Tensor>& history) {
  TORCH_CHECK(x.dim() == 3 && x.stride(2) == 1, "x must be (batch, L, d) with contiguous channels");
  TORCH_CHECK(weight.dim() == 2 && weight.is_contiguous() && weight.size(1) == x.size(2),
              "weight must be (K, d) and contiguous");
  TORCH_CHECK(!bias || (bias->is_contiguous() && bias->numel() == x.size(2)), "bias must be (d) and contiguous");
  TORCH_CHECK(block >= 0, "block must be >= 0");
  TORCH_CHECK(!history || (history->is_contiguous() && history->size(0) == x.size(0) &&
                           history->size(1) == weight.size(0) - 1 && history->size(2) == x.size(2)),
              "history must be (batch, K - 1, d) and contiguous");
  TORCH_CHECK(!history || !block || block >= x.size(1), "a history needs one block over all of x");
}

}  // namespace

Tensor conv_silu_forward(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias, int64_t block,
                         const std::optional<Tensor>& history) {
  check(x, weight, bias, block, history);
  Tensor out = torch::empty(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_silu_forward", [&] {
    const Conv<scalar_t> conv(x, weight, bias, block, history);
    scalar_t* out_p = out.data_ptr<scalar_t>();
    at::parallel_for(0, conv.batch * conv.tasks_per_batch(), 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        conv.each_step(i, [&](int64_t b, int64_t t) {
          scalar_t* __restrict__ o = out_p + (b * conv.len + t) * conv.dim;
          conv.pre(b, t, o);
          for (int64_t c = 0; c < conv.dim; ++c) o[c] *= sigmoid(o[c]);
        });
      }
    });
  });
  return out;
}

std::vector<Tensor> conv_silu_backward(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                                       int64_t block, const std::optional<Tensor>& history,
                                       const Tensor& grad_out) {
  check(x, weight, bias, block, history);
  TORCH_CHECK(grad_out.is_contiguous() && grad_out.sizes() == x.sizes(), "grad_out must be like x, contiguous");
  const int64_t batch = x.size(0), len = x.size(1), dim = x.size(2), width = weight.size(0);
  const int64_t tasks = batch * ((len + kSteps - 1) / kSteps);
  Tensor dpre = torch::empty(x.sizes(), x.options());
  Tensor dx = torch::empty(x.sizes(), x.options());
  Tensor dw = torch::zeros({tasks, width, dim}, x.options());
  Tensor dbias = torch::zeros({tasks, dim}, x.options());
  Tensor dhist = history ? torch::zeros(history->sizes(), x.options()) : torch::empty({0}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_silu_backward", [&] {
    using T = scalar_t;
    const Conv<T> conv(x, weight, bias, block, history);
    const T* g = grad_out.data_ptr<T>();
    T* dpre_p = dpre.data_ptr<T>();
    // Pass 1: the pre-activation's gradient, d silu(p) / dp = s (1 + p (1 - s)), and from it the
    // task's share of the weight and bias gradients.
    at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> p(dim);
      for (int64_t i = begin; i < end; ++i) {
        T* __restrict__ dw_i = dw.data_ptr<T>() + i * width * dim;
        T* __restrict__ db_i = dbias.data_ptr<T>() + i * dim;
        conv.each_step(i, [&](int64_t b, int64_t t) {
          conv.pre(b, t, p.data());
          const T* __restrict__ gt = g + (b * len + t) * dim;
          T* __restrict__ d = dpre_p + (b * len + t) * dim;
          for (int64_t c = 0; c < dim; ++c) {
            const T s = sigmoid(p[c]);
            d[c] = gt[c] * s * (T(1) + p[c] * (T(1) - s));
            db_i[c] += d[c];
          }
          for (int64_t k = 0; k < width; ++k) {
            const T* __restrict__ xs = conv.tap(b, t, k);
            if (!xs) continue;
            T* __restrict__ dwk = dw_i + k * dim;
            for (int64_t c = 0; c < dim; ++c) dwk[c] += d[c] * xs[c];
          }
        });
      }
    });
    // Pass 2: each input step's gradient gathers the pre-activation gradients of the steps that read it.
    T* dx_p = dx.data_ptr<T>();
    at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        conv.each_step(i, [&](int64_t b, int64_t s) {
          T* __restrict__ out = dx_p + (b * len + s) * dim;
          std::fill(out, out + dim, T(0));
          for (int64_t k = 0; k < width; ++k) {
            const int64_t t = conv.target(s, k);
            if (t < 0) continue;
            const T* __restrict__ d = dpre_p + (b * len + t) * dim;
            const T* __restrict__ wk = conv.w + k * dim;
            for (int64_t c = 0; c < dim; ++c) out[c] += wk[c] * d[c];
          }
        });
      }
    });
    // The history's gradient, serially: only the K - 1 steps next to it read it.
    if (history) {
      T* dh = dhist.data_ptr<T>();
      const int64_t edge = std::min(len, width - 1);
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t e = 0; e < edge; ++e) {
          const int64_t t = block ? len - 1 - e : e;
          for (int64_t k = 0; k < width; ++k) {
            const int64_t s = conv.source(t, k);
            if (s >= 0 || s == Conv<T>::kNone) continue;
            T* __restrict__ out = dh + (b * (width - 1) + (-1 - s)) * dim;
            const T* __restrict__ d = dpre_p + (b * len + t) * dim;
            const T* __restrict__ wk = conv.w + k * dim;
            for (int64_t c = 0; c < dim; ++c) out[c] += wk[c] * d[c];
          }
        }
    }
  });
  return {dx, dhist, dw, dbias};
}

}  // namespace ssamba
