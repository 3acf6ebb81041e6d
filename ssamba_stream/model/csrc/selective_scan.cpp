// Selective scan of Mamba-1 (S6) on CPU, forward and backward, built on first use by native_scan.py.
//
// Time runs sequentially with the state in a small local array, and at::parallel_for spreads
// channels over threads. Two forms of the forward:
// - float inputs whose channels are contiguous (a Mamba layer's (batch, L, d) tensors, handed over
//   as (batch, d, L) views) run kGroup channels at a time in the lanes of a vector (GroupForward):
//   inputs read and the output written as they lie, the output as a view of a channels-last tensor;
// - anything else, and the backward's replay, run one (batch, channel) row at a time, the loops over
//   the state vectorised by the compiler (SSE/AVX on x86_64, NEON on aarch64).
// Memory is the outputs plus, per thread, the states and decays that the backward replays in
// reverse (2 * L * d_state values per row; per group of kGroup rows, kGroup times that, and as
// much again for dB and dC per lane): never (batch, d, L, d_state).
//
// Layouts (one dtype, float or double): u, dt, z (batch, d, L) with any strides, so that the
// channels-last (batch, L, d) tensors of a Mamba layer come in as the views they are, without a
// transposing copy: in the row form, a thread stages a tile of kTile rows at a time into
// contiguous buffers by a blocked transpose (reading one row's strided time steps instead costs a
// TLB miss every step or two and is slower than torch's copy). B and C are either fixed (d, n) or
// time-major (batch, groups, L, n) with any batch, group and time strides and contiguous n; the
// rest is contiguous: out (batch, d, L) from the row form, the gradients (batch, d, L), A (d, n),
// D (d), delta_bias (d), states (batch, d, n). The step size is softplus(delta + delta_bias),
// computed in a pass of its own that vectorises (a libm call per time step inside the scan would
// cost more than the step's state update); the backward returns the gradient of the raw delta, so
// no step-size tensor is ever allocated.
//
// Blocks (`block` > 0): time splits into blocks of that many steps, and each block runs from its
// last step to its first, from zero state (the first one from the initial state, which is only
// allowed where one block covers the row: a whole-row scan backward in time). That is the
// block-local backward direction of a streaming SSAMBA layer computed in place, on whole rows in
// time order: no windows cut out, flipped and stacked into short rows, whose per-row overheads and
// per-row gradient partials (d_state values per block per channel) would cost more than the scan.

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include "conv_silu.h"
#include "fast_math.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

namespace {

using ssamba::exp_approx;
using ssamba::sigmoid;
using ssamba::softplus;
using torch::Tensor;
using OptTensor = std::optional<Tensor>;

// Lanes of the reductions over the state: partial sums per lane keep the loops vectorisable
// without -ffast-math (which would also license rewriting exp_approx's rounding). The selects in
// the loops need -fno-trapping-math to become vector blends.
constexpr int64_t kLanes = 8;

// Rows staged together: one 64-byte cache line of a channels-last float tensor.
constexpr int64_t kTile = 16;

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

// A (batch, d, L) input with any strides: row (b, d) starts at row(b, d), its steps are `step` apart.
template <typename T>
struct Rows {
  const T* data = nullptr;
  int64_t sb = 0, sd = 0, step = 0;

  Rows() = default;
  explicit Rows(const Tensor& t) : data(t.data_ptr<T>()), sb(t.stride(0)), sd(t.stride(1)), step(t.stride(2)) {}
  const T* row(int64_t b, int64_t d) const { return data + b * sb + d * sd; }
  explicit operator bool() const { return data != nullptr; }
};

// B or C: fixed (d, n), or time-major (batch, groups, L, n) read through its strides.
template <typename T>
struct Projection {
  const T* data;
  int64_t groups, sb, sg, step;  // groups 0 for fixed (d, n), whose step is 0

  explicit Projection(const Tensor& M)
      : data(M.data_ptr<T>()),
        groups(M.dim() == 2 ? 0 : M.size(1)),
        sb(M.dim() == 2 ? 0 : M.stride(0)),
        sg(M.dim() == 2 ? 0 : M.stride(1)),
        step(M.dim() == 2 ? 0 : M.stride(2)) {}
};

// The inputs of one call, with each row's pointers derived from (b, d).
template <typename T>
struct Problem {
  Rows<T> u, dt, z;  // dt: the raw delta, before bias and softplus
  const T *A, *D, *bias, *h0;
  bool use_softplus;
  Projection<T> B, C;
  int64_t batch, dim, len, n;
  int64_t block;  // 0: one scan over the whole row

  Problem(const Tensor& u_, const Tensor& dt_, const Tensor& A_, const Tensor& B_, const Tensor& C_,
          const OptTensor& D_, const OptTensor& z_, const OptTensor& bias_, bool softplus_, const OptTensor& h0_,
          int64_t block_)
      : u(u_),
        dt(dt_),
        z(z_ ? Rows<T>(*z_) : Rows<T>()),
        A(A_.data_ptr<T>()),
        D(D_ ? D_->data_ptr<T>() : nullptr),
        bias(bias_ ? bias_->data_ptr<T>() : nullptr),
        h0(h0_ ? h0_->data_ptr<T>() : nullptr),
        use_softplus(softplus_),
        B(B_),
        C(C_),
        batch(u_.size(0)),
        dim(u_.size(1)),
        len(u_.size(2)),
        n(A_.size(1)),
        block(block_) {}

  // f(t, first) for a row's time steps in scan order; `first` where the state starts afresh before
  // step t (the initial state, or zero at a block's start).
  template <typename F>
  void in_scan_order(F&& f) const {
    if (!block) {
      for (int64_t t = 0; t < len; ++t) f(t, t == 0);
      return;
    }
    for (int64_t start = 0; start < len; start += block) {
      const int64_t last = std::min(len, start + block) - 1;
      for (int64_t t = last; t >= start; --t) f(t, t == last);
    }
  }

  // The time step at position i of the scan order.
  int64_t time_at(int64_t i) const {
    if (!block) return i;
    const int64_t start = i / block * block;
    return std::min(len, start + block) - 1 - (i - start);
  }

  // Whether the state restarts from zero before position i of the scan order: a block after the first.
  bool restarts_at(int64_t i) const { return block && i >= block && i % block == 0; }

  // Whether the state restarts from zero before step t, the `first` step of a block after the first.
  bool zeroed_before(int64_t t, bool first) const { return first && block && t >= block; }

  // The same steps, last first: the adjoint's order.
  template <typename F>
  void in_reverse_scan_order(F&& f) const {
    if (!block) {
      for (int64_t t = len - 1; t >= 0; --t) f(t, t == 0);
      return;
    }
    for (int64_t start = (len - 1) / block * block; start >= 0; start -= block) {
      const int64_t last = std::min(len, start + block) - 1;
      for (int64_t t = start; t <= last; ++t) f(t, t == last);
    }
  }

  // Row (b, d)'s slot in the contiguous (batch, d, L) outputs.
  int64_t row(int64_t b, int64_t d) const { return (b * dim + d) * len; }

  // B or C for row (b, d) at t = 0 (its steps are M.step apart).
  const T* bc(const Projection<T>& M, int64_t b, int64_t d) const {
    if (M.groups == 0) return M.data + d * n;
    return M.data + b * M.sb + (d / (dim / M.groups)) * M.sg;
  }

  // Rows [d0, d0 + count) of batch b of src into dst (count, L), contiguous in time: a blocked
  // transpose, kTile time steps at a time, whose source lines stay in L1 while each row's run of
  // kTile steps is written contiguously.
  void gather(const Rows<T>& src, int64_t b, int64_t d0, int64_t count, T* __restrict__ dst) const {
    const T* base = src.row(b, d0);
    for (int64_t t0 = 0; t0 < len; t0 += kTile) {
      const int64_t t1 = std::min(len, t0 + kTile);
      for (int64_t c = 0; c < count; ++c) {
        const T* __restrict__ from = base + c * src.sd;
        T* __restrict__ to = dst + c * len;
        for (int64_t t = t0; t < t1; ++t) to[t] = from[t * src.step];
      }
    }
  }

  // Row d forward from state h (in: the initial state, out: the last one), from its contiguous
  // u and step-size rows: y_t = C_t . h_t into Y (L); with Save, every state h_t and decay
  // exp(dt_t A) into H and E (L * n each, in scan order).
  template <bool Save>
  void forward_row(int64_t b, int64_t d, const T* __restrict__ ur, const T* __restrict__ dtr, T* __restrict__ h,
                   T* __restrict__ Y, T* __restrict__ H, T* __restrict__ E) const {
    const T* __restrict__ Ad = A + d * n;
    const T* Bp = bc(B, b, d);
    const T* Cp = bc(C, b, d);
    const int64_t lanes = n - n % kLanes;
    int64_t i = 0;  // position in scan order
    in_scan_order([&](int64_t t, bool first) {
      if (zeroed_before(t, first)) std::fill(h, h + n, T(0));
      const T step = dtr[t];
      const T x = step * ur[t];
      const T* __restrict__ Bt = Bp + t * B.step;
      const T* __restrict__ Ct = Cp + t * C.step;
      T* Ht = Save ? H + i * n : h;  // not written without Save
      T* Et = Save ? E + i * n : h;
      T acc[kLanes] = {};
      for (int64_t k = 0; k < lanes; k += kLanes)
        forward_lanes<kLanes, Save>(step, x, Ad + k, Bt + k, Ct + k, h + k, Ht + k, Et + k, acc);
      for (int64_t k = lanes; k < n; ++k)
        forward_lanes<1, Save>(step, x, Ad + k, Bt + k, Ct + k, h + k, Ht + k, Et + k, acc);
      Y[t] = lane_sum(acc);
      ++i;
    });
  }

  // Row d's skip connection and gate (zr null without z), in place on y: separate passes over time
  // vectorise the gate's exponential, which inside the time loop would sit on its critical path.
  void finish_row(int64_t d, const T* __restrict__ ur, const T* __restrict__ zr, T* __restrict__ y) const {
    const T Dd = D ? D[d] : T(0);
    for (int64_t t = 0; t < len; ++t) y[t] += Dd * ur[t];
    if (zr)
      for (int64_t t = 0; t < len; ++t) y[t] *= zr[t] * sigmoid(zr[t]);
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

// A thread's tile: up to kTile rows of one batch element, each contiguous in time. u and z point
// into the tensors when their rows already are contiguous, else into the staging buffer; raw holds
// delta + bias and steps the step sizes (raw itself without softplus).
template <typename T>
struct Tile {
  std::vector<T> buf;
  const T *u = nullptr, *z = nullptr, *steps = nullptr;
  T* raw = nullptr;
  int64_t u_stride = 0, z_stride = 0, len;

  explicit Tile(int64_t len_) : buf(4 * kTile * len_), len(len_) {}

  const T* u_row(int64_t c) const { return u + c * u_stride; }
  const T* z_row(int64_t c) const { return z ? z + c * z_stride : nullptr; }
  const T* steps_row(int64_t c) const { return steps + c * len; }
  const T* raw_row(int64_t c) const { return raw + c * len; }

  // Rows [d0, d0 + count) of batch b.
  void stage(const Problem<T>& p, int64_t b, int64_t d0, int64_t count) {
    T* slot = buf.data();
    auto rows = [&](const Rows<T>& src, int64_t& stride) -> const T* {
      if (src.step == 1) {
        stride = src.sd;
        return src.row(b, d0);
      }
      p.gather(src, b, d0, count, slot);
      stride = len;
      slot += kTile * len;
      return slot - kTile * len;
    };
    u = rows(p.u, u_stride);
    z = p.z ? rows(p.z, z_stride) : nullptr;
    raw = slot;
    p.gather(p.dt, b, d0, count, raw);
    for (int64_t c = 0; c < count; ++c) {
      const T beta = p.bias ? p.bias[d0 + c] : T(0);
      T* __restrict__ r = raw + c * len;
      for (int64_t t = 0; t < len; ++t) r[t] += beta;
    }
    if (!p.use_softplus) {
      steps = raw;
      return;
    }
    T* out = raw + kTile * len;
    for (int64_t i = 0; i < count * len; ++i) out[i] = softplus(raw[i]);
    steps = out;
  }
};

// Tiles of kTile rows per batch element (the last one of each may be shorter).
inline int64_t tiles_per_batch(int64_t dim) { return (dim + kTile - 1) / kTile; }

Tensor empty_like_rows(const Tensor& u) { return torch::empty_like(u, at::MemoryFormat::Contiguous); }

// The layouts the kernel reads through raw pointers (the header's list): anything else is a caller's bug.
void check_layouts(const Tensor& A, const Tensor& B, const Tensor& C, const OptTensor& D, const OptTensor& bias,
                   const OptTensor& h0, int64_t block) {
  TORCH_CHECK(block >= 0, "block must be >= 0");
  for (const OptTensor& t : {OptTensor(A), D, bias, h0})
    TORCH_CHECK(!t || t->is_contiguous(), "A, D, delta_bias and the initial state must be contiguous");
  for (const Tensor* M : {&B, &C})
    TORCH_CHECK(M->dim() == 2 ? M->is_contiguous() : M->stride(3) == 1, "B and C need contiguous n");
}

// The forward over channels-last float inputs (the (batch, L, d) views of a Mamba layer) runs
// kGroup channels in the lanes of a Floats: each step's output is then a vertical sum over the
// state, in registers, with no reduction across lanes, and the inputs and outputs are read and
// written as they lie, with no staging or transposing copy.
constexpr int64_t kGroup = ssamba::kFloatLanes;

// Steps of scan order that a task's groups run through together (see GroupForward).
constexpr int64_t kSegment = 16;

using ssamba::Floats;
using ssamba::load;
using ssamba::store;

// kGroup rows of a (rows, n) array from `rows` (or zeros without one) into the state-major
// (n, kGroup) layout of a group's vectors, and back.
inline void to_state_major(const float* rows, int64_t n, float* __restrict__ group) {
  for (int64_t k = 0; k < n; ++k)
    for (int64_t j = 0; j < kGroup; ++j) group[k * kGroup + j] = rows ? rows[j * n + k] : 0.0f;
}

inline void from_state_major(const float* __restrict__ group, int64_t n, float* rows) {
  for (int64_t k = 0; k < n; ++k)
    for (int64_t j = 0; j < kGroup; ++j) rows[j * n + k] = group[k * kGroup + j];
}

// The step sizes of a group from its raw delta: softplus(delta + bias), or without softplus the sum.
inline Floats group_steps(const Problem<float>& p, const float* raw, Floats bias) {
  const Floats sum = load(raw) + bias;
  return p.use_softplus ? ssamba::softplus(sum) : sum;
}

// One step of a group over the n states (state-major (n, kGroup) A and h): h = exp(step A) h + x B_t,
// returns C_t . h per channel. Two partial sums halve the sum's dependency chain.
template <int64_t N>
inline Floats group_step(int64_t n, const float* __restrict__ At, Floats step, Floats x,
                         const float* __restrict__ Bt, const float* __restrict__ Ct, float* __restrict__ h) {
  if (N) n = N;
  // Two states per iteration, both computed before either is stored: a lambda per state, stored at
  // once, ran 10% slower.
  Floats even{}, odd{};
  int64_t k = 0;
  for (; k + 1 < n; k += 2) {
    const float* __restrict__ A1 = At + (k + 1) * kGroup;
    const Floats next0 = exp_approx(step * load(At + k * kGroup)) * load(h + k * kGroup) + x * Bt[k];
    const Floats next1 = exp_approx(step * load(A1)) * load(h + (k + 1) * kGroup) + x * Bt[k + 1];
    store(h + k * kGroup, next0);
    store(h + (k + 1) * kGroup, next1);
    even += Ct[k] * next0;
    odd += Ct[k + 1] * next1;
  }
  if (k < n) {
    const Floats next = exp_approx(step * load(At + k * kGroup)) * load(h + k * kGroup) + x * Bt[k];
    store(h + k * kGroup, next);
    even += Ct[k] * next;
  }
  return even + odd;
}

// The forward of groups [g0, g1) of kGroup channels of batch b. Time goes in segments of kSegment
// steps of scan order, each run through by every group of the task before the next segment, so
// that a time step's inputs and outputs are touched as whole rows while they are in cache. Each
// segment's step sizes and inputs x = step * u come first, in a pass whose steps are independent
// (inside the scan, each step's softplus would sit on the critical path). Writes y into out
// (batch, L, d) and the last states into last (batch, d, n).
struct GroupForward {
  const Problem<float>& p;
  float* out;
  float* last;

  static int64_t work_size(int64_t dim, int64_t n) { return 2 * dim * n + 2 * kSegment * dim; }

  void run(int64_t b, int64_t g0, int64_t g1, float* __restrict__ work) const {
    const int64_t n = p.n, d0 = g0 * kGroup, width = (g1 - g0) * kGroup;
    float* __restrict__ At = work;  // per group (n, kGroup), state-major
    float* __restrict__ h = At + width * n;
    float* __restrict__ steps = h + width * n;  // (kSegment, width)
    float* __restrict__ xs = steps + kSegment * width;
    for (int64_t d = d0; d < d0 + width; d += kGroup) {
      to_state_major(p.A + d * n, n, At + (d - d0) * n);
      to_state_major(p.h0 ? p.h0 + (b * p.dim + d) * n : nullptr, n, h + (d - d0) * n);
    }
    for (int64_t i0 = 0; i0 < p.len; i0 += kSegment) {
      const int64_t i1 = std::min(p.len, i0 + kSegment);
      inputs(b, d0, width, i0, i1, steps, xs);
      if (n == 16) {  // Mamba's default: a fixed state size unrolls the loop over it
        segment<16>(b, g0, g1, i0, i1, work);
      } else {
        segment<0>(b, g0, g1, i0, i1, work);
      }
    }
    for (int64_t d = d0; d < d0 + width; d += kGroup) from_state_major(h + (d - d0) * n, n, last + (b * p.dim + d) * n);
  }

  // Groups [g0, g1) through scan positions [i0, i1), from the state, step sizes and inputs in work
  // (run's layout); N > 0 when it is the state size.
  template <int64_t N>
  void segment(int64_t b, int64_t g0, int64_t g1, int64_t i0, int64_t i1, float* __restrict__ work) const {
    const int64_t n = N ? N : p.n, d0 = g0 * kGroup, width = (g1 - g0) * kGroup;
    const float* __restrict__ At = work;
    float* __restrict__ h = work + width * n;
    const float* __restrict__ steps = h + width * n;
    const float* __restrict__ xs = steps + kSegment * width;
    const float* Bp = p.bc(p.B, b, d0);
    const float* Cp = p.bc(p.C, b, d0);
    for (int64_t g = 0; g < g1 - g0; ++g) {
      const int64_t d = d0 + g * kGroup;
      float* __restrict__ hg = h + g * n * kGroup;
      const float* ug = p.u.row(b, d);
      const float* zg = p.z ? p.z.row(b, d) : nullptr;
      float* yg = out + b * p.len * p.dim + d;
      const Floats Dg = p.D ? load(p.D + d) : Floats{};
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t t = p.time_at(i), slot = (i - i0) * width + g * kGroup;
        if (p.restarts_at(i)) std::fill(hg, hg + n * kGroup, 0.0f);
        Floats y = Dg * load(ug + t * p.u.step) + group_step<N>(n, At + g * n * kGroup, load(steps + slot),
                                                                load(xs + slot), Bp + t * p.B.step,
                                                                Cp + t * p.C.step, hg);
        if (zg) {
          const Floats z = load(zg + t * p.z.step);
          y *= z * sigmoid(z);
        }
        store(yg + t * p.dim, y);
      }
    }
  }

  // Step sizes and x = step * u of channels [d0, d0 + width) at scan positions [i0, i1), into
  // (i1 - i0, width) rows.
  void inputs(int64_t b, int64_t d0, int64_t width, int64_t i0, int64_t i1, float* __restrict__ steps,
              float* __restrict__ xs) const {
    const float* ur = p.u.row(b, d0);
    const float* dr = p.dt.row(b, d0);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t t = p.time_at(i);
      for (int64_t c = 0; c < width; c += kGroup) {
        const Floats step = group_steps(p, dr + t * p.dt.step + c, p.bias ? load(p.bias + d0 + c) : Floats{});
        store(steps + (i - i0) * width + c, step);
        store(xs + (i - i0) * width + c, step * load(ur + t * p.u.step + c));
      }
    }
  }
};

// The backward of a task's groups of kGroup channels, channels in vector lanes as in GroupForward:
// per group, a forward replay keeps every state and decay (in scan order, (L, n, kGroup) each),
// then the adjoint lambda_t = dL/dh_t runs back in time. The time-varying dB and dC, sums over
// channels, gather per lane in the task's (L, n, kGroup) buffers and are reduced across lanes once,
// at the task's end, into its (L, n) slice. dout, du, ddt and dz are channels-last (batch, L, d).
struct GroupBackward {
  const Problem<float>& p;
  Rows<float> dout;
  const float* dlast;
  float *du, *ddt, *dz, *dA, *dD, *dh0;

  // rows()'s work: dB and dC per lane, then group()'s (states, decays, three per-step and five
  // per-state vectors).
  static int64_t work_size(int64_t len, int64_t n) { return (4 * len * n + 3 * len + 5 * n) * kGroup; }

  // Rows [r0, r0 + count) of batch b (whole groups); their dB and dC sums into the (L, n) slices.
  void rows(int64_t b, int64_t r0, int64_t count, float* dB_slice, float* dC_slice, float* __restrict__ work) const {
    const int64_t len = p.len, n = p.n;
    float* __restrict__ dBacc = work;  // (L, n, kGroup), per lane
    float* __restrict__ dCacc = dBacc + len * n * kGroup;
    std::fill(dBacc, dBacc + 2 * len * n * kGroup, 0.0f);
    float* __restrict__ scratch = dCacc + len * n * kGroup;
    for (int64_t d = r0; d < r0 + count; d += kGroup) {
      if (n == 16) {
        group<16>(b, d, dBacc, dCacc, scratch);
      } else {
        group<0>(b, d, dBacc, dCacc, scratch);
      }
    }
    for (int64_t e = 0; e < len * n; ++e) {
      float sb = 0.0f, sc = 0.0f;
      for (int64_t j = 0; j < kGroup; ++j) {
        sb += dBacc[e * kGroup + j];
        sc += dCacc[e * kGroup + j];
      }
      dB_slice[e] += sb;
      dC_slice[e] += sc;
    }
  }

  // Channels [d, d + kGroup) of batch b; dB and dC per lane into dBacc and dCacc. `work` holds
  // the replay's states and decays and the group's per-step and per-state vectors.
  template <int64_t N>
  void group(int64_t b, int64_t d, float* __restrict__ dBacc, float* __restrict__ dCacc,
             float* __restrict__ work) const {
    const int64_t n = N ? N : p.n, len = p.len, size = n * kGroup;  // size: one (n, kGroup) state
    float* __restrict__ H = work;  // (L, n, kGroup): the states, in scan order
    float* __restrict__ E = H + len * size;  // the decays exp(step A), likewise
    float* __restrict__ G = E + len * size;  // (L, kGroup): C . h, then dL/d(C . h)
    float* __restrict__ steps = G + len * kGroup;
    float* __restrict__ xs = steps + len * kGroup;
    float* __restrict__ At = xs + len * kGroup;  // (n, kGroup)
    float* __restrict__ h = At + size;           // the initial state
    float* __restrict__ zeros = h + size;        // the state where a block restarts
    float* __restrict__ lam = zeros + size;
    float* __restrict__ gA = lam + size;
    const int64_t state = (b * p.dim + d) * n;  // the group's first row in (batch, d, n) states
    to_state_major(p.A + d * n, n, At);
    to_state_major(p.h0 ? p.h0 + state : nullptr, n, h);
    to_state_major(dlast ? dlast + state : nullptr, n, lam);
    std::fill(zeros, zeros + size, 0.0f);
    std::fill(gA, gA + size, 0.0f);
    const float* ur = p.u.row(b, d);
    const float* dr = p.dt.row(b, d);
    const float* Bp = p.bc(p.B, b, d);
    const float* Cp = p.bc(p.C, b, d);
    const Floats bias = p.bias ? load(p.bias + d) : Floats{};
    const Floats Dd = p.D ? load(p.D + d) : Floats{};
    for (int64_t t = 0; t < len; ++t) {
      const Floats step = group_steps(p, dr + t * p.dt.step, bias);
      store(steps + t * kGroup, step);
      store(xs + t * kGroup, step * load(ur + t * p.u.step));
    }
    // The state before scan position i.
    const auto before = [&](int64_t i) -> const float* {
      if (i == 0) return h;
      return p.restarts_at(i) ? zeros : H + (i - 1) * size;
    };
    for (int64_t i = 0; i < len; ++i) {  // the forward replay
      const int64_t t = p.time_at(i);
      const Floats step = load(steps + t * kGroup), x = load(xs + t * kGroup);
      const float* __restrict__ Bt = Bp + t * p.B.step;
      const float* __restrict__ Ct = Cp + t * p.C.step;
      const float* __restrict__ prev = before(i);
      Floats y{};
      for (int64_t k = 0; k < n; ++k) {
        const Floats a = exp_approx(step * load(At + k * kGroup));
        const Floats hk = a * load(prev + k * kGroup) + x * Bt[k];
        store(H + i * size + k * kGroup, hk);
        store(E + i * size + k * kGroup, a);
        y += Ct[k] * hk;
      }
      store(G + t * kGroup, y);
    }
    // dL/d(C . h) through the gate and the skip connection; dz on the way.
    const float* zr = p.z ? p.z.row(b, d) : nullptr;
    const float* gr = dout.row(b, d);
    for (int64_t t = 0; t < len; ++t) {
      const Floats g = load(gr + t * dout.step);
      if (!zr) {
        store(G + t * kGroup, g);
        continue;
      }
      const Floats z = load(zr + t * p.z.step), sz = sigmoid(z);
      const Floats y = load(G + t * kGroup) + Dd * load(ur + t * p.u.step);
      store(dz + (b * len + t) * p.dim + d, g * y * sz * (1.0f + z * (1.0f - sz)));
      store(G + t * kGroup, g * z * sz);
    }
    Floats gD{};
    for (int64_t i = len - 1; i >= 0; --i) {  // the adjoint, back through scan order
      const int64_t t = p.time_at(i);
      const Floats g = load(G + t * kGroup), step = load(steps + t * kGroup), x = load(xs + t * kGroup);
      const Floats ut = load(ur + t * p.u.step);
      const float* __restrict__ Bt = Bp + t * p.B.step;
      const float* __restrict__ Ct = Cp + t * p.C.step;
      const float* __restrict__ Hi = H + i * size;
      const float* __restrict__ Ei = E + i * size;
      const float* __restrict__ prev = before(i);
      float* __restrict__ dBt = dBacc + t * size;
      float* __restrict__ dCt = dCacc + t * size;
      gD += g * ut;
      Floats gx{}, ga{};
      for (int64_t k = 0; k < n; ++k) {
        const int64_t o = k * kGroup;
        const Floats l = load(lam + o) + g * Ct[k];  // dL/dh_t
        const Floats e = load(Ei + o);
        store(dCt + o, load(dCt + o) + g * load(Hi + o));
        store(dBt + o, load(dBt + o) + l * x);
        gx += l * Bt[k];
        const Floats da = l * load(prev + o) * e;  // dL/d(step A) through the decay
        ga += da * load(At + o);
        store(gA + o, load(gA + o) + da * step);
        store(lam + o, l * e);
      }
      store(du + (b * len + t) * p.dim + d, g * Dd + gx * step);
      Floats gdt = gx * ut + ga;
      if (p.use_softplus) gdt *= sigmoid(load(dr + t * p.dt.step) + bias);  // softplus' = sigmoid
      store(ddt + (b * len + t) * p.dim + d, gdt);
      if (p.restarts_at(i)) std::fill(lam, lam + size, 0.0f);  // no gradient into the block before
    }
    from_state_major(lam, n, dh0 + state);
    from_state_major(gA, n, dA + state);
    store(dD + b * p.dim + d, gD);
  }
};

// Whether the group forms suit the problem: contiguous channels, whole groups, time-varying B and
// C with each group of channels inside one of their groups.
bool suits_groups(const Problem<float>& p) {
  const bool rows = p.u.sd == 1 && p.dt.sd == 1 && (!p.z || p.z.sd == 1);
  const auto fits = [&](const Projection<float>& M) { return M.groups != 0 && (p.dim / M.groups) % kGroup == 0; };
  return rows && p.dim % kGroup == 0 && fits(p.B) && fits(p.C);
}

// A (batch, d, L) view of a new channels-last float tensor, for the group forms' outputs.
Tensor channels_last_rows(const Problem<float>& p) {
  return torch::empty({p.batch, p.len, p.dim}, torch::kFloat).transpose(1, 2);
}

// GroupForward over every group, into out (channels-last) and last.
void forward_in_groups(const Problem<float>& p, Tensor& out, float* last) {
  out = channels_last_rows(p);
  const int64_t groups = p.dim / kGroup;
  const GroupForward forward{p, out.data_ptr<float>(), last};
  at::parallel_for(0, p.batch * groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> work(GroupForward::work_size(p.dim, p.n));
    for (int64_t i = begin; i < end;) {  // the task's groups, one batch element at a time
      const int64_t b = i / groups, g1 = std::min(end - b * groups, groups);
      forward.run(b, i % groups, g1, work.data());
      i = b * groups + g1;
    }
  });
}

std::vector<Tensor> scan_forward(const Tensor& u, const Tensor& dt, const Tensor& A, const Tensor& B,
                                 const Tensor& C, const OptTensor& D, const OptTensor& z, const OptTensor& bias,
                                 bool softplus, const OptTensor& h0, int64_t block) {
  Tensor last = torch::empty({u.size(0), u.size(1), A.size(1)}, u.options());
  check_layouts(A, B, C, D, bias, h0, block);
  TORCH_CHECK(!block || !h0 || block >= u.size(2), "an initial state needs one block over the whole row");
  Tensor out;
  if (u.scalar_type() == torch::kFloat) {
    const Problem<float> p(u, dt, A, B, C, D, z, bias, softplus, h0, block);
    if (suits_groups(p)) {
      forward_in_groups(p, out, last.data_ptr<float>());
      return {out, last};
    }
  }
  out = empty_like_rows(u);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_forward", [&] {
    const Problem<scalar_t> p(u, dt, A, B, C, D, z, bias, softplus, h0, block);
    scalar_t* last_p = last.data_ptr<scalar_t>();
    scalar_t* out_p = out.data_ptr<scalar_t>();
    const int64_t tiles = tiles_per_batch(p.dim);
    at::parallel_for(0, p.batch * tiles, 1, [&](int64_t begin, int64_t end) {
      Tile<scalar_t> tile(p.len);
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / tiles, d0 = (i % tiles) * kTile, count = std::min(kTile, p.dim - d0);
        tile.stage(p, b, d0, count);
        for (int64_t c = 0; c < count; ++c) {
          const int64_t row = b * p.dim + d0 + c;
          scalar_t* h = last_p + row * p.n;  // the state lives in its output slot
          scalar_t* y = out_p + row * p.len;
          p.initial_state(b, d0 + c, h);
          p.forward_row<false>(b, d0 + c, tile.u_row(c), tile.steps_row(c), h, y, nullptr, nullptr);
          p.finish_row(d0 + c, tile.u_row(c), tile.z_row(c), y);
        }
      }
    });
  });
  return {out, last};
}

// Backward of rows [d0, d0 + count) of batch b: replays each row's forward (states and decays
// into work), then runs the adjoint lambda_t = dL/dh_t back in time. Per-row results (du, ddt, dz,
// dh0, and the sums over time dA, dD, fixed dB/dC) go to their own slots; time-varying
// dB/dC of the rows add into this task's own (L, n) slice, so no two tasks write the same memory.
template <typename T>
struct Backward {
  const Problem<T>& p;
  const T *dout, *dlast;
  T *du, *ddt, *dz, *dA, *dB, *dC, *dD, *dh0;

  // The length of `work` that rows() needs.
  static int64_t work_size(int64_t len, int64_t n) { return 2 * len * n + len + 5 * n; }

  void rows(int64_t b, int64_t d0, int64_t count, T* dB_slice, T* dC_slice, std::vector<T>& work,
            Tile<T>& tile) const {
    for (int64_t first = d0; first < d0 + count; first += kTile) {
      const int64_t size = std::min(kTile, d0 + count - first);
      tile.stage(p, b, first, size);
      for (int64_t c = 0; c < size; ++c) row(b, first + c, tile, c, dB_slice, dC_slice, work);
    }
  }

  // Row d of batch b, which is row c of the staged tile.
  void row(int64_t b, int64_t d, const Tile<T>& tile, int64_t c, T* dB_slice, T* dC_slice,
           std::vector<T>& work) const {
    const int64_t n = p.n, len = p.len, lanes = n - n % kLanes;
    T* H = work.data();
    T* E = H + len * n;
    T* Y = E + len * n;
    T* h = Y + len;
    T* lam = h + n;
    T* gA = lam + n;
    T* gB = gA + n;
    T* gC = gB + n;
    const T* __restrict__ ur = tile.u_row(c);
    const T* __restrict__ S = tile.steps_row(c);
    p.initial_state(b, d, h);
    p.template forward_row<true>(b, d, ur, S, h, Y, H, E);
    p.initial_state(b, d, h);
    const int64_t r = p.row(b, d), s = (b * p.dim + d) * n;
    const T* __restrict__ Ad = p.A + d * n;
    const T* Bp = p.bc(p.B, b, d);
    const T* Cp = p.bc(p.C, b, d);
    // Fixed B/C gradients sum over time into gB/gC (step 0), time-varying ones go to the slice.
    const int64_t sdb = p.B.groups ? n : 0, sdc = p.C.groups ? n : 0;
    T* dBp = p.B.groups ? dB_slice : gB;
    T* dCp = p.C.groups ? dC_slice : gC;
    const T Dd = p.D ? p.D[d] : T(0);
    if (dlast) {
      std::copy(dlast + s, dlast + s + n, lam);
    } else {
      std::fill(lam, lam + n, T(0));
    }
    std::fill(gA, gA + n, T(0));
    std::fill(gB, gB + n, T(0));
    std::fill(gC, gC + n, T(0));
    // dL/dy_t (y_t = C_t . h_t) into Y, through the gate and the skip connection; dz on the way.
    const T* __restrict__ gout = dout + r;
    if (p.z) {
      const T* __restrict__ zr = tile.z_row(c);
      T* __restrict__ dzr = dz + r;
      for (int64_t t = 0; t < len; ++t) {
        const T sz = sigmoid(zr[t]);
        dzr[t] = gout[t] * (Y[t] + Dd * ur[t]) * sz * (T(1) + zr[t] * (T(1) - sz));
        Y[t] = gout[t] * zr[t] * sz;
      }
    } else {
      std::copy(gout, gout + len, Y);
    }
    T gD = 0;
    int64_t i = len;  // position in scan order
    p.in_reverse_scan_order([&](int64_t t, bool first) {
      --i;
      const T dt = S[t];
      const T ut = ur[t];
      const T x = dt * ut;
      const T* __restrict__ Bt = Bp + t * p.B.step;
      const T* __restrict__ Ct = Cp + t * p.C.step;
      const T* __restrict__ Ht = H + i * n;
      // h holds the initial state, zero wherever there are several blocks
      const T* __restrict__ Hp = first ? h : H + (i - 1) * n;
      const T* __restrict__ Et = E + i * n;
      T* __restrict__ dBt = dBp + t * sdb;
      T* __restrict__ dCt = dCp + t * sdc;
      const T g = Y[t];
      gD += g * ut;
      T accx[kLanes] = {}, acca[kLanes] = {};
      for (int64_t k = 0; k < lanes; k += kLanes)
        adjoint_lanes<kLanes>(g, x, dt, Ad + k, Bt + k, Ct + k, Ht + k, Hp + k, Et + k, lam + k, gA + k,
                              dBt + k, dCt + k, accx, acca);
      for (int64_t k = lanes; k < n; ++k)
        adjoint_lanes<1>(g, x, dt, Ad + k, Bt + k, Ct + k, Ht + k, Hp + k, Et + k, lam + k, gA + k, dBt + k,
                         dCt + k, accx, acca);
      const T gx = lane_sum(accx), ga = lane_sum(acca);
      du[r + t] = g * Dd + gx * dt;
      ddt[r + t] = gx * ut + ga;
      if (p.zeroed_before(t, first)) std::fill(lam, lam + n, T(0));  // no gradient into the block before
    });
    // Through the softplus to the raw delta: d softplus(x) / dx = sigmoid(x).
    if (p.use_softplus) {
      const T* __restrict__ x = tile.raw_row(c);
      T* __restrict__ g = ddt + r;
      for (int64_t t = 0; t < len; ++t) g[t] *= sigmoid(x[t]);
    }
    std::copy(lam, lam + n, dh0 + s);
    std::copy(gA, gA + n, dA + s);
    if (!p.B.groups) std::copy(gB, gB + n, dB + s);
    if (!p.C.groups) std::copy(gC, gC + n, dC + s);
    dD[b * p.dim + d] = gD;
  }
};

// GroupBackward over (batch, parts) tasks of `rows` channels each; the gradients' layouts are those
// of scan_backward, with du, ddt and dz channels-last.
void backward_in_groups(const Problem<float>& p, const Rows<float>& dout, const float* dlast, float* du,
                        float* ddt, float* dz, float* dA, float* dD, float* dh0, int64_t rows, float* dB,
                        float* dC) {
  const GroupBackward bw{p, dout, dlast, du, ddt, dz, dA, dD, dh0};
  const int64_t parts = p.dim / rows;
  at::parallel_for(0, p.batch * parts, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> work(GroupBackward::work_size(p.len, p.n));
    for (int64_t i = begin; i < end; ++i) {
      const int64_t slice = i * p.len * p.n;
      bw.rows(i / parts, i % parts * rows, rows, dB + slice, dC + slice, work.data());
    }
  });
}

// Gradients of every input (ddt of the raw delta; the caller sums it into delta_bias's).
// Per-batch partial sums come back for the caller to reduce: dA
// (batch, d, n), dD (batch, d), fixed dB/dC (batch, d, n); time-varying dB/dC as
// (batch, parts, L, n) where part i holds the rows [i * d / parts, (i + 1) * d / parts), and
// ``parts`` is chosen by the caller so that every part lies inside one group of B and of C.
std::vector<Tensor> scan_backward(const Tensor& u, const Tensor& dt, const Tensor& A, const Tensor& B,
                                  const Tensor& C, const OptTensor& D, const OptTensor& z, const OptTensor& bias,
                                  bool softplus, const OptTensor& h0, int64_t block,
                                  const Tensor& dout, const OptTensor& dlast, int64_t parts) {
  const int64_t batch = u.size(0), dim = u.size(1), len = u.size(2), n = A.size(1);
  TORCH_CHECK(parts >= 1 && dim % parts == 0, "parts must divide d");
  const auto opts = u.options();
  Tensor du, ddt, dz = torch::empty({0}, opts);
  Tensor dA = torch::empty({batch, dim, n}, opts), dh0 = torch::empty({batch, dim, n}, opts);
  Tensor dD = torch::empty({batch, dim}, opts);
  auto grad_bc = [&](const Tensor& M) {
    return M.dim() == 2 ? torch::empty({batch, dim, n}, opts) : torch::zeros({batch, parts, len, n}, opts);
  };
  Tensor dB = grad_bc(B), dC = grad_bc(C);
  check_layouts(A, B, C, D, bias, h0, block);
  const int64_t rows = dim / parts;
  // The group form where the forward ran in groups: dout channels-last, parts of whole groups.
  if (u.scalar_type() == torch::kFloat) {
    const Problem<float> p(u, dt, A, B, C, D, z, bias, softplus, h0, block);
    const Rows<float> douts(dout);
    if (suits_groups(p) && douts.sd == 1 && rows % kGroup == 0) {
      du = channels_last_rows(p);
      ddt = channels_last_rows(p);
      if (z) dz = channels_last_rows(p);
      backward_in_groups(p, douts, dlast ? dlast->data_ptr<float>() : nullptr, du.data_ptr<float>(),
                         ddt.data_ptr<float>(), z ? dz.data_ptr<float>() : nullptr, dA.data_ptr<float>(),
                         dD.data_ptr<float>(), dh0.data_ptr<float>(), rows, dB.data_ptr<float>(),
                         dC.data_ptr<float>());
      return {du, ddt, dA, dB, dC, dD, dz, dh0};
    }
  }
  du = empty_like_rows(u);
  ddt = empty_like_rows(u);
  if (z) dz = empty_like_rows(u);
  const Tensor dout_rows = dout.contiguous();  // the row form reads (batch, d, L)
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_backward", [&] {
    const Problem<scalar_t> p(u, dt, A, B, C, D, z, bias, softplus, h0, block);
    const Backward<scalar_t> bw{p,
                                dout_rows.data_ptr<scalar_t>(),
                                dlast ? dlast->data_ptr<scalar_t>() : nullptr,
                                du.data_ptr<scalar_t>(),
                                ddt.data_ptr<scalar_t>(),
                                z ? dz.data_ptr<scalar_t>() : nullptr,
                                dA.data_ptr<scalar_t>(),
                                dB.data_ptr<scalar_t>(),
                                dC.data_ptr<scalar_t>(),
                                dD.data_ptr<scalar_t>(),
                                dh0.data_ptr<scalar_t>()};
    at::parallel_for(0, batch * parts, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> work(Backward<scalar_t>::work_size(len, n));
      Tile<scalar_t> tile(len);
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / parts, part = i % parts;
        const int64_t slice = i * len * n;
        bw.rows(b, part * rows, rows, B.dim() == 2 ? nullptr : bw.dB + slice,
                C.dim() == 2 ? nullptr : bw.dC + slice, work, tile);
      }
    });
  });
  return {du, ddt, dA, dB, dC, dD, dz, dh0};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.attr("channel_group") = kGroup;  // the channels of a group: the backward's parts are whole groups
  m.def("forward", &scan_forward, "selective scan forward: (out, last_state)");
  m.def("backward", &scan_backward, "selective scan backward: gradients of every input");
  m.def("conv_silu_forward", &ssamba::conv_silu_forward, "silu(depthwise conv1d), channels-last");
  m.def("conv_silu_backward", &ssamba::conv_silu_backward, "gradients of conv_silu_forward's inputs");
}
