// Elementwise maths without libm calls, so that loops over the state, time or channels vectorise
// (SSE/AVX on x86_64, NEON on aarch64); shared by the native scan and the native conv. Each float
// function also takes a Floats, a vector of floats written with GCC's vector extensions (which
// Clang shares), for loops whose partial sums must stay in registers.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace ssamba {

// Lanes of a Floats: one 256-bit vector (two NEON registers on aarch64).
constexpr int64_t kFloatLanes = 8;
typedef float Floats __attribute__((vector_size(kFloatLanes * sizeof(float))));
typedef uint32_t Words __attribute__((vector_size(kFloatLanes * sizeof(uint32_t))));

// The unsigned integers of a float type's bits.
template <typename F>
struct BitsOf;
template <>
struct BitsOf<float> {
  using type = uint32_t;
};
template <>
struct BitsOf<Floats> {
  using type = Words;
};

// v in every lane of F (or v itself for a scalar).
template <typename F>
inline F splat(float v) {
  return F{} + v;
}

inline Floats load(const float* p) {
  Floats v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store(float* p, Floats v) { std::memcpy(p, &v, sizeof v); }

// e^x for float without a libm call, so that loops vectorise: x = k ln2 + r with |r| <= ln2 / 2
// (ln2 split in two for an exact k ln2), e^r = 1 + r + r^2 P(r) with P of degree 4 fitted for
// relative error (3e-9 in exact arithmetic, within 1 ulp in float), 2^k through the exponent bits.
// k is rounded by adding 1.5 * 2^23, whose sum's low bits then hold k, so no float-integer
// conversion is needed: about 16 vector instructions. Outside [-87.3, 88.3] the argument is
// clamped, so the result stays a normal float (1.2e-38 to 2.4e38); NaN stays NaN (the comparisons
// are false for it).
template <typename F>
inline F exp_approx(F x) {
  using U = typename BitsOf<F>::type;
  x = x < -87.33f ? splat<F>(-87.33f) : x;
  x = x > 88.37f ? splat<F>(88.37f) : x;
  const F shifted = x * 1.44269504088896341f + 12582912.0f;  // 1.5 * 2^23
  const F k = shifted - 12582912.0f;                          // round(x / ln2)
  const F r = (x - k * 0.693359375f) + k * 2.12194440e-4f;
  F p = splat<F>(1.38146022800356e-3f);
  p = p * r + 8.36871005594730e-3f;
  p = p * r + 4.16683889925480e-2f;
  p = p * r + 1.66665211319923e-1f;
  p = p * r + 4.99999940395355e-1f;
  p = 1.0f + (r + r * r * p);
  U bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  bits = (bits + 127u) << 23;  // k + 127 in the exponent field: the low bits of shifted are k's
  F scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline double exp_approx(double x) { return std::exp(x); }

// 2^x for x <= 0, cheaper than exp_approx where the caller can scale by log2(e) once: k = round(x),
// 2^(x - k) by a degree-5 polynomial fitted for relative error (1e-7, about float's rounding) on
// [-1/2, 1/2], 2^k through the exponent bits: about 11 vector instructions against 16. Below -126
// the argument is clamped, so the result stays a normal float (1.2e-38); x > 0 is not handled.
template <typename F>
inline F exp2_nonpositive(F x) {
  using U = typename BitsOf<F>::type;
  x = x < -126.0f ? splat<F>(-126.0f) : x;
  const F shifted = x + 12582912.0f;         // 1.5 * 2^23: the low bits of the sum hold round(x)
  const F f = x - (shifted - 12582912.0f);   // in [-1/2, 1/2]
  F p = splat<F>(1.3218672e-3f);
  p = p * f + 9.6716983e-3f;
  p = p * f + 5.5508930e-2f;
  p = p * f + 2.4022238e-1f;
  p = p * f + 6.9314688e-1f;
  p = p * f + 1.0f;
  U bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  bits = (bits + 127u) << 23;
  F scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// log(1 + y) for y in [0, 1] without a libm call: 2 atanh(s) with s = y / (2 + y) <= 1/3, whose
// odd series to s^15 is within 4e-9 relative, and exact in relative terms for tiny y.
template <typename F>
inline F log1p_unit(F y) {
  const F s = y / (2.0f + y);
  const F s2 = s * s;
  F p = splat<F>(1.0f / 15);
  p = p * s2 + 1.0f / 13;
  p = p * s2 + 1.0f / 11;
  p = p * s2 + 1.0f / 9;
  p = p * s2 + 1.0f / 7;
  p = p * s2 + 1.0f / 5;
  p = p * s2 + 1.0f / 3;
  return 2.0f * s * (p * s2 + 1.0f);
}

inline double log1p_unit(double y) { return std::log1p(y); }

// softplus(x) = max(x, 0) + log(1 + e^-|x|), stable for any x.
template <typename T>
inline T softplus(T x) {
  const T zero{};
  const T ax = x < zero ? -x : x;
  const T pos = x > zero ? x : zero;
  return pos + log1p_unit(exp_approx(-ax));
}

template <typename T>
inline T sigmoid(T x) {
  const T one = splat<T>(1.0f);
  return one / (one + exp_approx(-x));
}

}  // namespace ssamba
