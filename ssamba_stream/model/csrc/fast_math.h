// Elementwise maths without libm calls, so that loops over the state, time or channels vectorise
// (SSE/AVX on x86_64, NEON on aarch64); shared by the native scan and the native conv.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace ssamba {

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

// log(1 + y) for y in [0, 1] without a libm call: 2 atanh(s) with s = y / (2 + y) <= 1/3, whose
// odd series to s^15 is within 4e-9 relative, and exact in relative terms for tiny y.
inline float log1p_unit(float y) {
  const float s = y / (2.0f + y);
  const float s2 = s * s;
  float p = 1.0f / 15;
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
  const T ax = x < T(0) ? -x : x;
  const T pos = x > T(0) ? x : T(0);
  return pos + log1p_unit(exp_approx(-ax));
}

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + exp_approx(-x));
}

}  // namespace ssamba
