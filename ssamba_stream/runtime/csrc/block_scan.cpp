// The step graph's block scan (ssamba_stream/model/block_scan.py) for the serving runtime, as a
// plain C function for ctypes: no torch, no onnxruntime headers. One call scans every stream and
// both directions of one layer; the state of eight channels stays in vector registers across the
// block's steps, where onnxruntime makes one pass over memory per elementwise operator.
//
// delta = softplus(dt) is made here too (onnxruntime's Log is slow).
// Layouts (row-major, float32): u, dt, z, y (batch, groups, length, d); B, C (batch, groups,
// length, n); A, state, last (batch?, groups, n, d) with A shared by the batch; D (groups, d).
#include <cstdint>

#include "fast_math.h"

namespace {

constexpr int64_t kMaxLength = 64;

using ssamba::Floats;

// Channels [c, c + lanes) of one (stream, group): F is Floats for eight channels, float for one.
// kLength > 0 fixes the block's length at compile time, so that the per-step arrays below stay in
// registers (11% faster at 8 tokens); 0 takes it from `length`.
template <typename F, int64_t kLength>
void scan_channels(int64_t c, int64_t runtime_length, int64_t n, int64_t d, const float* u,
                   const float* dt_raw, const float* A, const float* B, const float* C, const float* D,
                   const float* z, const float* state, float* y, float* last) {
  const int64_t length = kLength > 0 ? kLength : runtime_length;
  auto load = [](const float* p) {
    if constexpr (sizeof(F) == sizeof(float)) return *p; else return ssamba::load(p);
  };
  auto store = [](float* p, F v) {
    if constexpr (sizeof(F) == sizeof(float)) *p = v; else ssamba::store(p, v);
  };
  // Each state row in turn over the block's steps, so the row's state stays in one register and
  // the outputs of all steps accumulate in a small local array.
  constexpr int64_t kSlots = kLength > 0 ? kLength : kMaxLength;
  F delta[kSlots], input[kSlots], out[kSlots];
  for (int64_t t = 0; t < length; ++t) {
    delta[t] = ssamba::softplus(load(dt_raw + t * d + c));
    input[t] = delta[t] * load(u + t * d + c);
    out[t] = ssamba::splat<F>(0.0f);
  }
  for (int64_t i = 0; i < n; ++i) {
    const F a = load(A + i * d + c) * 1.44269504088896341f;  // log2(e): the decay as a power of 2
    F h = load(state + i * d + c);
    for (int64_t t = 0; t < length; ++t) {
      h = ssamba::exp2_nonpositive(delta[t] * a) * h + input[t] * B[t * n + i];
      out[t] += h * C[t * n + i];
    }
    store(last + i * d + c, h);
  }
  const F d_skip = load(D + c);
  for (int64_t t = 0; t < length; ++t) {
    const F gate = load(z + t * d + c);
    store(y + t * d + c, (out[t] + load(u + t * d + c) * d_skip) * gate * ssamba::sigmoid(gate));
  }
}

// Every (stream, group) of one layer, at a block length fixed at compile time (or 0: any).
template <int64_t kLength>
void scan_layer(int64_t batch, int64_t groups, int64_t length, int64_t n, int64_t d, const float* u,
                const float* dt, const float* A, const float* B, const float* C, const float* D,
                const float* z, const float* state, float* y, float* last) {
  for (int64_t s = 0; s < batch * groups; ++s) {
    const int64_t g = s % groups;
    const int64_t rows = s * length * d, steps = s * length * n, states = s * n * d;
    int64_t c = 0;
    for (; c + ssamba::kFloatLanes <= d; c += ssamba::kFloatLanes)
      scan_channels<Floats, kLength>(c, length, n, d, u + rows, dt + rows, A + g * n * d, B + steps,
                                     C + steps, D + g * d, z + rows, state + states, y + rows,
                                     last + states);
    for (; c < d; ++c)
      scan_channels<float, kLength>(c, length, n, d, u + rows, dt + rows, A + g * n * d, B + steps,
                                    C + steps, D + g * d, z + rows, state + states, y + rows,
                                    last + states);
  }
}

}  // namespace

extern "C" {

// Longest block the kernel takes (its per-step values live in fixed local arrays).
int64_t ssamba_block_scan_max_length() { return kMaxLength; }

void ssamba_block_scan(int64_t batch, int64_t groups, int64_t length, int64_t n, int64_t d,
                       const float* u, const float* dt, const float* A, const float* B,
                       const float* C, const float* D, const float* z, const float* state, float* y,
                       float* last) {
  switch (length) {  // the block lengths an export is likely to use, compiled for their length
    case 4: return scan_layer<4>(batch, groups, length, n, d, u, dt, A, B, C, D, z, state, y, last);
    case 8: return scan_layer<8>(batch, groups, length, n, d, u, dt, A, B, C, D, z, state, y, last);
    case 16: return scan_layer<16>(batch, groups, length, n, d, u, dt, A, B, C, D, z, state, y, last);
    default: return scan_layer<0>(batch, groups, length, n, d, u, dt, A, B, C, D, z, state, y, last);
  }
}

}  // extern "C"
