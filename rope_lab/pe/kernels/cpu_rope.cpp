// Rotary rotation of bf16 tensors with interleaved pairs (2j, 2j+1) on x86 CPUs with AVX2 (issue 6).
//
// TorchInductor emits scalar code for the stride-2 accesses this layout needs. Here a pair of bf16 values is one
// 32-bit word: the even element is its low half, the odd one its high half, so 8 words (16 values) hold 8 whole
// pairs in pair order. Widening to fp32 is a shift (even) or a mask (odd); the rotation is done in fp32 with
// separate multiplies and subtractions (no FMA: the same roundings as the eager oracle); the result is rounded to
// bf16 to nearest-even (NaN -> the canonical quiet NaN, as torch does) and packed back into words.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <cstdint>
#include <cstring>

namespace {

inline float widen(uint16_t b) { uint32_t u = uint32_t(b) << 16; float f; std::memcpy(&f, &u, 4); return f; }

inline uint16_t narrow(float f) {
  if (f != f) return 0x7FC0;
  uint32_t u; std::memcpy(&u, &f, 4);
  return uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

inline __m256i narrow8(__m256 f) {  // 8 floats -> 8 bf16 in the low halves of 32-bit lanes
  const __m256i u = _mm256_castps_si256(f);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFF))), 16);
  const __m256 nan = _mm256_cmp_ps(f, f, _CMP_UNORD_Q);
  return _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FC0), _mm256_castps_si256(nan));
}

// One row: D channels of x (unit stride), P pairs, cos/sin rows of P floats.
inline void rotate_row(const uint16_t* x, uint16_t* out, const float* c, const float* s, int64_t P, int64_t D) {
  int64_t p = 0;
  const __m256i high = _mm256_set1_epi32(int(0xFFFF0000u));
  for (; p + 8 <= P; p += 8) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 2 * p));
    const __m256 x1 = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
    const __m256 x2 = _mm256_castsi256_ps(_mm256_and_si256(w, high));
    const __m256 cv = _mm256_loadu_ps(c + p), sv = _mm256_loadu_ps(s + p);
    const __m256 o1 = _mm256_sub_ps(_mm256_mul_ps(x1, cv), _mm256_mul_ps(x2, sv));
    const __m256 o2 = _mm256_add_ps(_mm256_mul_ps(x2, cv), _mm256_mul_ps(x1, sv));
    const __m256i packed = _mm256_or_si256(narrow8(o1), _mm256_slli_epi32(narrow8(o2), 16));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 2 * p), packed);
  }
  for (; p < P; ++p) {
    const float x1 = widen(x[2 * p]), x2 = widen(x[2 * p + 1]);
    out[2 * p] = narrow(x1 * c[p] - x2 * s[p]);
    out[2 * p + 1] = narrow(x2 * c[p] + x1 * s[p]);
  }
  for (int64_t d = 2 * P; d < D; ++d) out[d] = x[d];
}

inline int64_t bstride(const torch::Tensor& t, int dim) { return t.size(dim) == 1 ? 0 : t.stride(dim); }

}  // namespace

// x (B, H, N, D) bf16 with unit last stride; cos, sin (B|1, H|1, N, P) fp32 with unit last stride.
// Returns the rotation with x's strides.
torch::Tensor rotate_bf16_interleaved(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && x.dim() == 4 && x.stride(3) == 1, "x: 4-D bf16, unit last stride");
  TORCH_CHECK(cos.scalar_type() == at::kFloat && sin.scalar_type() == at::kFloat && cos.stride(3) == 1 &&
              sin.stride(3) == 1 && cos.sizes() == sin.sizes(), "cos/sin: fp32, same shape, unit last stride");
  auto out = torch::empty_like(x);
  TORCH_CHECK(out.strides() == x.strides(), "x must be dense (its strides are kept for the output)");
  const int64_t H = x.size(1), N = x.size(2), D = x.size(3), P = cos.size(3);
  const int64_t rows = x.size(0) * H * N;
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  auto* op = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  const int64_t xb = x.stride(0), xh = x.stride(1), xn = x.stride(2);
  const int64_t cb = bstride(cos, 0), ch = bstride(cos, 1), cn = cos.stride(2);
  const int64_t sb = bstride(sin, 0), sh = bstride(sin, 1), sn = sin.stride(2);
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    // (b, h, n) of the first row by division, then counted up: a division per row costs as much as its math
    int64_t n = begin % N, h = (begin / N) % H, b = begin / (N * H);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t off = b * xb + h * xh + n * xn;
      rotate_row(xp + off, op + off, cp + b * cb + h * ch + n * cn, sp + b * sb + h * sh + n * sn, P, D);
      if (++n == N) {
        n = 0;
        if (++h == H) { h = 0; ++b; }
      }
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rotate_bf16_interleaved", &rotate_bf16_interleaved, "bf16 interleaved-pair rotation (AVX2)");
}
