// Selective scan of Mamba-1 (S6) on CPU, forward and backward, built on first use by native_scan.py.
//
// One (batch, channel) row at a time: time runs sequentially with the state (d_state values) in a
// small local array, the loops over the state are plain C++ that the compiler vectorises (SSE/AVX on
// x86_64, NEON on aarch64), and at::parallel_for spreads rows over threads. Memory is the outputs
// plus, per thread, the row's states and decays (2 * L * d_state values) that the backward replays
// in reverse: never (batch, d, L, d_state).
//
// Layouts (all contiguous, one dtype, float or double): u, delta, z, out (batch, d, L); A (d, n);
// B and C either fixed (d, n) or time-major (batch, groups, L, n); D, delta_bias (d); states
// (batch, d, n). native_scan.py converts the contract's layouts to these.

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

namespace {

using torch::Tensor;
using OptTensor = std::optional<Tensor>;

// Lanes of the reductions over the state: partial sums per lane keep the loops vectorisable
// without -ffast-math (which would also license rewriting exp_approx's rounding). The selects in
// the loops need -fno-trapping-math to become vector blends.
constexpr int64_t kLanes = 8;

// e^x for float without a libm call, so that loops over the state vectorise: x = k ln2 + r with
// |r| <= ln2 / 2 (ln2 split in two for an exact k ln2), e^r by Cephes' degree-7 polynomial,
// 2^k through the exponent bits. About 1 ulp; 0 below -87, inf above 88.7, NaN stays NaN.
inline float exp_approx(float x) {
  float xc = x > -87.0f ? x : -87.0f;  // also maps NaN to a finite value: k stays defined
  xc = xc < 88.0f ? xc : 88.0f;
  const int32_t k = static_cast<int32_t>(xc * 1.44269504088896341f + 126.5f) - 126;  // round(xc / ln2)
  const float kf = static_cast<float>(k);
  const float r = (x - kf * 0.693359375f) + kf * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (k + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  float e = p * scale;
  e = x < -87.0f ? 0.0f : e;
  return x > 88.7228f ? std::numeric_limits<float>::infinity() : e;
}

inline double exp_approx(double x) { return std::exp(x); }

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// torch.nn.functional.softplus with its default threshold (x > 20: x).
template <typename T>
inline T softplus(T x) {
  return x > T(20) ? x : std::log1p(std::exp(x));
}

template <typename T>
inline T lane_sum(const T* acc) {
  T s = 0;
  for (int64_t j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}

// One time step of the forward over W states: h = exp(dt A) h + x B, acc[j] += C h (lane j), and
// with Save the new states and decays into H and E. Blocks of kLanes states vectorise; W = 1 takes
// the remainder.
template <int64_t W, bool Save, typename T>
inline void forward_lanes(T dt, T x, const T* __restrict__ A, const T* __restrict__ B, const T* __restrict__ C,
                          T* __restrict__ h, T* __restrict__ H, T* __restrict__ E, T* __restrict__ acc) {
  for (int64_t j = 0; j < W; ++j) {
    const T a = exp_approx(dt * A[j]);
    const T hj = a * h[j] + x * B[j];
    h[j] = hj;
    acc[j] += C[j] * hj;
    if (Save) {
      H[j] = hj;
      E[j] = a;
    }
  }
}

// One time step of the adjoint over W states, lam = dL/dh_{t+1} * exp(dt_{t+1} A) on entry and
// dL/dh_t * exp(dt_t A) on exit. Adds g h_t to dC, lam_t x to dB, dt * dL/d(dt A) to gA; lane sums
// of lam_t B (for dx) and A * dL/d(dt A) (for ddt) into gx and ga.
template <int64_t W, typename T>
inline void adjoint_lanes(T g, T x, T dt, const T* __restrict__ A, const T* __restrict__ B,
                          const T* __restrict__ C, const T* __restrict__ H, const T* __restrict__ Hprev,
                          const T* __restrict__ E, T* __restrict__ lam, T* __restrict__ gA, T* __restrict__ dB,
                          T* __restrict__ dC, T* __restrict__ gx, T* __restrict__ ga) {
  for (int64_t j = 0; j < W; ++j) {
    const T l = lam[j] + g * C[j];  // dL/dh_t
    dC[j] += g * H[j];
    dB[j] += l * x;
    gx[j] += l * B[j];
    const T da = l * Hprev[j] * E[j];  // dL/d(dt_t A) through the decay
    ga[j] += da * A[j];
    gA[j] += da * dt;
    lam[j] = l * E[j];
  }
}

template <int64_t W, typename T>
inline void dot_lanes(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ acc) {
  for (int64_t j = 0; j < W; ++j) acc[j] += a[j] * b[j];
}

// The inputs of one call, with each row's pointers derived from (b, d).
template <typename T>
struct Problem {
  const T *u, *delta, *A, *B, *C, *D, *z, *bias, *h0;
  bool use_softplus;
  int64_t batch, dim, len, n;
  int64_t groups_b, groups_c;  // 0 for fixed (d, n)

  Problem(const Tensor& u_, const Tensor& delta_, const Tensor& A_, const Tensor& B_, const Tensor& C_,
          const OptTensor& D_, const OptTensor& z_, const OptTensor& bias_, const OptTensor& h0_,
          bool softplus_)
      : u(u_.data_ptr<T>()),
        delta(delta_.data_ptr<T>()),
        A(A_.data_ptr<T>()),
        B(B_.data_ptr<T>()),
        C(C_.data_ptr<T>()),
        D(D_ ? D_->data_ptr<T>() : nullptr),
        z(z_ ? z_->data_ptr<T>() : nullptr),
        bias(bias_ ? bias_->data_ptr<T>() : nullptr),
        h0(h0_ ? h0_->data_ptr<T>() : nullptr),
        use_softplus(softplus_),
        batch(u_.size(0)),
        dim(u_.size(1)),
        len(u_.size(2)),
        n(A_.size(1)),
        groups_b(B_.dim() == 2 ? 0 : B_.size(1)),
        groups_c(C_.dim() == 2 ? 0 : C_.size(1)) {}

  int64_t row(int64_t b, int64_t d) const { return (b * dim + d) * len; }

  // B or C for row (b, d) at t = 0, and the step between time steps (0 when fixed).
  const T* bc(const T* M, int64_t groups, int64_t b, int64_t d) const {
    if (groups == 0) return M + d * n;
    return M + ((b * groups + d / (dim / groups)) * len) * n;
  }
  int64_t bc_step(int64_t groups) const { return groups == 0 ? 0 : n; }

  // The step size and its derivative with respect to delta.
  T step(int64_t d, T raw, T* ddt_ddelta) const {
    if (bias) raw += bias[d];
    if (!use_softplus) {
      *ddt_ddelta = 1;
      return raw;
    }
    *ddt_ddelta = raw > T(20) ? T(1) : sigmoid(raw);
    return softplus(raw);
  }

  // Row (b, d) forward from state h (in: the initial state, out: the last one). Writes the output
  // row when out is given; with Save, every state h_t and decay exp(dt_t A) into H and E (L * n each)
  // for the backward.
  template <bool Save>
  void forward_row(int64_t b, int64_t d, T* __restrict__ h, T* __restrict__ out, T* __restrict__ H,
                   T* __restrict__ E) const {
    const int64_t r = row(b, d);
    const T* __restrict__ Ad = A + d * n;
    const T* Bp = bc(B, groups_b, b, d);
    const T* Cp = bc(C, groups_c, b, d);
    const int64_t sb = bc_step(groups_b), sc = bc_step(groups_c);
    const int64_t blocks = n - n % kLanes;
    for (int64_t t = 0; t < len; ++t) {
      T unused;
      const T dt = step(d, delta[r + t], &unused);
      const T x = dt * u[r + t];
      const T* __restrict__ Bt = Bp + t * sb;
      const T* __restrict__ Ct = Cp + t * sc;
      T* Ht = Save ? H + t * n : h;  // not written without Save
      T* Et = Save ? E + t * n : h;
      T acc[kLanes] = {};
      for (int64_t k = 0; k < blocks; k += kLanes)
        forward_lanes<kLanes, Save>(dt, x, Ad + k, Bt + k, Ct + k, h + k, Ht + k, Et + k, acc);
      for (int64_t k = blocks; k < n; ++k)
        forward_lanes<1, Save>(dt, x, Ad + k, Bt + k, Ct + k, h + k, Ht + k, Et + k, acc);
      const T y = lane_sum(acc);
      if (out) {
        const T ut = u[r + t];
        T o = D ? y + D[d] * ut : y;
        if (z) o *= z[r + t] * sigmoid(z[r + t]);
        out[r + t] = o;
      }
    }
  }

  // Row (b, d)'s initial state into h.
  void initial_state(int64_t b, int64_t d, T* h) const {
    if (h0) {
      std::copy(h0 + (b * dim + d) * n, h0 + (b * dim + d + 1) * n, h);
    } else {
      std::fill(h, h + n, T(0));
    }
  }
};

Tensor empty_like_rows(const Tensor& u) { return torch::empty_like(u, at::MemoryFormat::Contiguous); }

std::vector<Tensor> scan_forward(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                                 const Tensor& C, const OptTensor& D, const OptTensor& z,
                                 const OptTensor& delta_bias, const OptTensor& h0, bool delta_softplus) {
  Tensor out = empty_like_rows(u);
  Tensor last = torch::empty({u.size(0), u.size(1), A.size(1)}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_forward", [&] {
    const Problem<scalar_t> p(u, delta, A, B, C, D, z, delta_bias, h0, delta_softplus);
    scalar_t* out_p = out.data_ptr<scalar_t>();
    scalar_t* last_p = last.data_ptr<scalar_t>();
    at::parallel_for(0, p.batch * p.dim, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        scalar_t* h = last_p + i * p.n;  // the state lives in its output slot
        p.initial_state(i / p.dim, i % p.dim, h);
        p.forward_row<false>(i / p.dim, i % p.dim, h, out_p, nullptr, nullptr);
      }
    });
  });
  return {out, last};
}

// Backward of rows [d0, d0 + count) of batch b: replays each row's forward (states and decays
// into work), then runs the adjoint lambda_t = dL/dh_t back in time. Per-row results (du, ddelta,
// dz, dh0, and the sums over time dA, dD, dbias, fixed dB/dC) go to their own slots; time-varying
// dB/dC of the rows add into this task's own (L, n) slice, so no two tasks write the same memory.
template <typename T>
struct Backward {
  const Problem<T>& p;
  const T *dout, *dlast;
  T *du, *ddelta, *dz, *dA, *dB, *dC, *dD, *dbias, *dh0;

  void rows(int64_t b, int64_t d0, int64_t count, T* dB_slice, T* dC_slice, std::vector<T>& work) const {
    const int64_t n = p.n, len = p.len, blocks = n - n % kLanes;
    T* H = work.data();
    T* E = H + len * n;
    T* h = E + len * n;
    T* lam = h + n;
    T* gA = lam + n;
    T* gB = gA + n;
    T* gC = gB + n;
    for (int64_t d = d0; d < d0 + count; ++d) {
      p.initial_state(b, d, h);
      p.template forward_row<true>(b, d, h, nullptr, H, E);
      p.initial_state(b, d, h);
      const int64_t r = p.row(b, d), s = (b * p.dim + d) * n;
      const T* __restrict__ Ad = p.A + d * n;
      const T* Bp = p.bc(p.B, p.groups_b, b, d);
      const T* Cp = p.bc(p.C, p.groups_c, b, d);
      const int64_t sb = p.bc_step(p.groups_b), sc = p.bc_step(p.groups_c);
      // Fixed B/C gradients sum over time into gB/gC (step 0), time-varying ones go to the slice.
      const int64_t sdb = p.groups_b ? n : 0, sdc = p.groups_c ? n : 0;
      T* dBp = p.groups_b ? dB_slice : gB;
      T* dCp = p.groups_c ? dC_slice : gC;
      const T Dd = p.D ? p.D[d] : T(0);
      if (dlast) {
        std::copy(dlast + s, dlast + s + n, lam);
      } else {
        std::fill(lam, lam + n, T(0));
      }
      std::fill(gA, gA + n, T(0));
      std::fill(gB, gB + n, T(0));
      std::fill(gC, gC + n, T(0));
      T gD = 0, gbias = 0;
      for (int64_t t = len - 1; t >= 0; --t) {
        T ddt_ddelta;
        const T dt = p.step(d, p.delta[r + t], &ddt_ddelta);
        const T ut = p.u[r + t];
        const T x = dt * ut;
        const T* __restrict__ Bt = Bp + t * sb;
        const T* __restrict__ Ct = Cp + t * sc;
        const T* __restrict__ Ht = H + t * n;
        const T* __restrict__ Hp = t > 0 ? H + (t - 1) * n : h;  // h holds the initial state
        const T* __restrict__ Et = E + t * n;
        T* __restrict__ dBt = dBp + t * sdb;
        T* __restrict__ dCt = dCp + t * sdc;
        // Gradient of y_t: through the gate (which needs y_t itself) and the skip connection.
        T g = dout[r + t];
        if (p.z) {
          T acc[kLanes] = {};
          for (int64_t k = 0; k < blocks; k += kLanes) dot_lanes<kLanes>(Ct + k, Ht + k, acc);
          for (int64_t k = blocks; k < n; ++k) dot_lanes<1>(Ct + k, Ht + k, acc);
          const T y = lane_sum(acc);
          const T pre = y + Dd * ut, zt = p.z[r + t], sz = sigmoid(zt);
          dz[r + t] = g * pre * sz * (T(1) + zt * (T(1) - sz));
          g *= zt * sz;
        }
        gD += g * ut;
        T accx[kLanes] = {}, acca[kLanes] = {};
        for (int64_t k = 0; k < blocks; k += kLanes)
          adjoint_lanes<kLanes>(g, x, dt, Ad + k, Bt + k, Ct + k, Ht + k, Hp + k, Et + k, lam + k, gA + k,
                                dBt + k, dCt + k, accx, acca);
        for (int64_t k = blocks; k < n; ++k)
          adjoint_lanes<1>(g, x, dt, Ad + k, Bt + k, Ct + k, Ht + k, Hp + k, Et + k, lam + k, gA + k, dBt + k,
                           dCt + k, accx, acca);
        const T gx = lane_sum(accx), ga = lane_sum(acca);
        const T gdt = (gx * ut + ga) * ddt_ddelta;
        du[r + t] = g * Dd + gx * dt;
        ddelta[r + t] = gdt;
        gbias += gdt;
      }
      std::copy(lam, lam + n, dh0 + s);
      std::copy(gA, gA + n, dA + s);
      if (!p.groups_b) std::copy(gB, gB + n, dB + s);
      if (!p.groups_c) std::copy(gC, gC + n, dC + s);
      dD[b * p.dim + d] = gD;
      dbias[b * p.dim + d] = gbias;
    }
  }
};

// Gradients of every input. Per-batch partial sums come back for the caller to reduce: dA
// (batch, d, n), dD and ddelta_bias (batch, d), fixed dB/dC (batch, d, n); time-varying dB/dC as
// (batch, parts, L, n) where part i holds the rows [i * d / parts, (i + 1) * d / parts), and
// ``parts`` is chosen by the caller so that every part lies inside one group of B and of C.
std::vector<Tensor> scan_backward(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                                  const Tensor& C, const OptTensor& D, const OptTensor& z,
                                  const OptTensor& delta_bias, const OptTensor& h0, bool delta_softplus,
                                  const Tensor& dout, const OptTensor& dlast, int64_t parts) {
  const int64_t batch = u.size(0), dim = u.size(1), len = u.size(2), n = A.size(1);
  TORCH_CHECK(parts >= 1 && dim % parts == 0, "parts must divide d");
  const auto opts = u.options();
  Tensor du = empty_like_rows(u), ddelta = empty_like_rows(u);
  Tensor dz = z ? empty_like_rows(u) : torch::empty({0}, opts);
  Tensor dA = torch::empty({batch, dim, n}, opts), dh0 = torch::empty({batch, dim, n}, opts);
  Tensor dD = torch::empty({batch, dim}, opts), dbias = torch::empty({batch, dim}, opts);
  auto grad_bc = [&](const Tensor& M) {
    return M.dim() == 2 ? torch::empty({batch, dim, n}, opts) : torch::zeros({batch, parts, len, n}, opts);
  };
  Tensor dB = grad_bc(B), dC = grad_bc(C);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_backward", [&] {
    const Problem<scalar_t> p(u, delta, A, B, C, D, z, delta_bias, h0, delta_softplus);
    const Backward<scalar_t> bw{p,
                                dout.data_ptr<scalar_t>(),
                                dlast ? dlast->data_ptr<scalar_t>() : nullptr,
                                du.data_ptr<scalar_t>(),
                                ddelta.data_ptr<scalar_t>(),
                                z ? dz.data_ptr<scalar_t>() : nullptr,
                                dA.data_ptr<scalar_t>(),
                                dB.data_ptr<scalar_t>(),
                                dC.data_ptr<scalar_t>(),
                                dD.data_ptr<scalar_t>(),
                                dbias.data_ptr<scalar_t>(),
                                dh0.data_ptr<scalar_t>()};
    const int64_t rows = dim / parts;
    at::parallel_for(0, batch * parts, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> work(2 * len * n + 5 * n);
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / parts, part = i % parts;
        const int64_t slice = i * len * n;
        bw.rows(b, part * rows, rows, B.dim() == 2 ? nullptr : bw.dB + slice,
                C.dim() == 2 ? nullptr : bw.dC + slice, work);
      }
    });
  });
  return {du, ddelta, dA, dB, dC, dD, dz, dbias, dh0};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &scan_forward, "selective scan forward: (out, last_state)");
  m.def("backward", &scan_backward, "selective scan backward: gradients of every input");
}
