// Rotary rotation on x86 CPUs (issue 6): x (B, H, N, D) fp32 or bf16, fp32 tables (B|1, H|1, N, P), pairs
// interleaved (2j, 2j+1) or half (j, j+P). TorchInductor emits scalar code for the interleaved layout's stride-2
// accesses (RoPE-ViT, GPT-J, Meta LLaMA), and for half pairs reads the tables once per head. Bit-identical to the
// eager oracle: the rotation is done in fp32 with separate multiplies and adds (built with -ffp-contract=off: no
// FMA, the same roundings as eager), one rounding back to bf16 (to nearest even, as torch does).
//
// Two instruction sets, picked at run time:
//  avx512  AVX-512 with BF16 (Sapphire Rapids, Zen 4, ...): fp32 and bf16, both layouts, 16 pairs per step, a
//          masked tail step. Interleaved fp32 pairs are split and re-interleaved with two-source permutes; half
//          bf16 halves are widened from 16-bit lanes. bf16 is rounded by VCVTNE2PS2BF16,
//          which flushes denormal results to zero, so a step with a denormal result is rounded in software
//          instead (rare: |value| < 1.2e-38).
//  avx2    bf16 interleaved only: a pair is one 32-bit word, widened by a shift (even) or a mask (odd), rounded
//          in software.
// Rows are split over threads with at::parallel_for (needs -fopenmp: without it the OpenMP region runs serially).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>

namespace {

inline float widen(uint16_t b) { uint32_t u = uint32_t(b) << 16; float f; std::memcpy(&f, &u, 4); return f; }

inline uint16_t narrow(float f) {
  if (f != f) return 0x7FC0;
  uint32_t u; std::memcpy(&u, &f, 4);
  return uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// A run of rows: `rows` rows of D channels (unit stride) whose first 2P are P pairs, x/out rows `x_step` elements
// apart, cos/sin rows of P floats `t_step` apart; channels past 2P pass through. One call per run, not per row:
// a ViT row is only two 16-pair steps. A run covers `heads` heads (x/out `h_step` elements apart) that share the
// table rows: each step's cos/sin are loaded once for all of them.
struct Run {
  const void* x; void* out; const float* c; const float* s;
  int64_t rows, x_step, t_step, P, D;
  int64_t heads = 1, h_step = 0;
};
using RunFn = void (*)(const Run&);

template <typename T>
inline void pass_through(const T* x, T* out, int64_t P, int64_t D) {
  if (D > 2 * P) std::memcpy(out + 2 * P, x + 2 * P, (D - 2 * P) * sizeof(T));
}

// ---------------------------------------------------------------------------------------------- AVX2, bf16 pairs
inline __m256i narrow8(__m256 f) {  // 8 floats -> 8 bf16 in the low halves of 32-bit lanes
  const __m256i u = _mm256_castps_si256(f);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFF))), 16);
  const __m256 nan = _mm256_cmp_ps(f, f, _CMP_UNORD_Q);
  return _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FC0), _mm256_castps_si256(nan));
}

inline void avx2_interleaved_bf16_row(const uint16_t* x, uint16_t* out, const float* c, const float* s, int64_t P) {
  const __m256i high = _mm256_set1_epi32(int(0xFFFF0000u));
  int64_t p = 0;
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
}

void avx2_interleaved_bf16(const Run& r) {
  for (int64_t h = 0; h < r.heads; ++h) {
    for (int64_t i = 0; i < r.rows; ++i) {
      const auto* x = static_cast<const uint16_t*>(r.x) + h * r.h_step + i * r.x_step;
      auto* out = static_cast<uint16_t*>(r.out) + h * r.h_step + i * r.x_step;
      avx2_interleaved_bf16_row(x, out, r.c + i * r.t_step, r.s + i * r.t_step, r.P);
      pass_through(x, out, r.P, r.D);
    }
  }
}

// ------------------------------------------------------------------------------------------- AVX-512 with BF16
#if defined(__GNUC__) && !defined(__clang__)
#define ROPE_LAB_AVX512 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")

// Heads rotated together by one step: their 16 pairs share one load of cos/sin lanes, which halves the vector loads
// per pair in bf16 and keeps the table rows in L1 instead of re-reading them per head from L2, where under huge
// pages each 2 MiB fault's zeroing evicts them (1-D bf16, THP: 1.18x -> 1.07x the clone floor; 4 beat 2, 8 and 16
// on every shape: more heads are more concurrent streams than the prefetcher follows).
constexpr int kHeadsPerStep = 4;

inline __mmask16 lanes(int64_t left) { return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1); }

// Loads/stores of 16 lanes; kMasked (the tail step of a row) touches only the lanes in m, reading others as zero.
template <bool kMasked> inline __m512 load_ps(__mmask16 m, const float* p) {
  if constexpr (kMasked) return _mm512_maskz_loadu_ps(m, p); else return _mm512_loadu_ps(p);
}
template <bool kMasked> inline void store_ps(__mmask16 m, float* p, __m512 v) {
  if constexpr (kMasked) _mm512_mask_storeu_ps(p, m, v); else _mm512_storeu_ps(p, v);
}
template <bool kMasked> inline __m512i load_words(__mmask16 m, const uint16_t* p) {
  if constexpr (kMasked) return _mm512_maskz_loadu_epi32(m, p); else return _mm512_loadu_si512(p);
}
template <bool kMasked> inline void store_words(__mmask16 m, uint16_t* p, __m512i v) {
  if constexpr (kMasked) _mm512_mask_storeu_epi32(p, m, v); else _mm512_storeu_si512(p, v);
}

// o1, o2 -> 32 bf16: words 0..15 = o1, 16..31 = o2
inline __m512i narrow32(__m512 o1, __m512 o2) {
  const __mmask16 tiny1 = _mm512_fpclass_ps_mask(o1, 0x20), tiny2 = _mm512_fpclass_ps_mask(o2, 0x20);  // denormal
  if (__builtin_expect(_kortestz_mask16_u8(tiny1, tiny2), 1)) return (__m512i)_mm512_cvtne2ps_pbh(o2, o1);
  alignas(64) float f[32];
  alignas(64) uint16_t b[32];
  _mm512_store_ps(f, o1);
  _mm512_store_ps(f + 16, o2);
  for (int i = 0; i < 32; ++i) b[i] = narrow(f[i]);
  return _mm512_load_si512(b);
}

// Each access reads the 16 pairs from pair p of a row (x1, x2 = their two elements) and writes them back.
struct InterleavedF32 {
  using T = float;
  static constexpr bool kFlat = true;
  static uint32_t floats(__mmask16 m) { return m == 0xFFFF ? 0xFFFFFFFFu : (1u << (2 * __builtin_popcount(m))) - 1; }
  template <bool kM> static void load(const T* x, int64_t P, int64_t p, __mmask16 m, __m512& x1, __m512& x2) {
    const uint32_t m2 = floats(m);
    const __m512 a = load_ps<kM>(__mmask16(m2), x + 2 * p), b = load_ps<kM>(__mmask16(m2 >> 16), x + 2 * p + 16);
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    x1 = _mm512_permutex2var_ps(a, even, b);
    x2 = _mm512_permutex2var_ps(a, _mm512_add_epi32(even, _mm512_set1_epi32(1)), b);
  }
  template <bool kM> static void store(T* o, int64_t P, int64_t p, __mmask16 m, __m512 o1, __m512 o2) {
    const uint32_t m2 = floats(m);
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    store_ps<kM>(__mmask16(m2), o + 2 * p, _mm512_permutex2var_ps(o1, lo, o2));
    store_ps<kM>(__mmask16(m2 >> 16), o + 2 * p + 16,
                 _mm512_permutex2var_ps(o1, _mm512_add_epi32(lo, _mm512_set1_epi32(8)), o2));
  }
};

struct InterleavedBF16 {  // a pair is one 32-bit word: even element in the low half
  using T = uint16_t;
  static constexpr bool kFlat = true;
  template <bool kM> static void load(const T* x, int64_t P, int64_t p, __mmask16 m, __m512& x1, __m512& x2) {
    const __m512i w = load_words<kM>(m, x + 2 * p);
    x1 = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
    x2 = _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32(int(0xFFFF0000u))));
  }
  template <bool kM> static void store(T* o, int64_t P, int64_t p, __mmask16 m, __m512 o1, __m512 o2) {
    const __m512i pairs = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                           23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    store_words<kM>(m, o + 2 * p, _mm512_permutexvar_epi16(pairs, narrow32(o1, o2)));
  }
};

// Half pairs (p, p + P): the two elements of 16 pairs are 16 consecutive values in each half of the row.
struct HalfF32 {
  using T = float;
  static constexpr bool kFlat = false;
  template <bool kM> static void load(const T* x, int64_t P, int64_t p, __mmask16 m, __m512& x1, __m512& x2) {
    x1 = load_ps<kM>(m, x + p);
    x2 = load_ps<kM>(m, x + P + p);
  }
  template <bool kM> static void store(T* o, int64_t P, int64_t p, __mmask16 m, __m512 o1, __m512 o2) {
    store_ps<kM>(m, o + p, o1);
    store_ps<kM>(m, o + P + p, o2);
  }
};

struct HalfBF16 {
  using T = uint16_t;
  static constexpr bool kFlat = false;
  template <bool kM> static __m512 widen16(__mmask16 m, const T* p) {
    const __m256i h = kM ? _mm256_maskz_loadu_epi16(m, p) : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  template <bool kM> static void store16(__mmask16 m, T* p, __m256i v) {
    if constexpr (kM) _mm256_mask_storeu_epi16(p, m, v); else _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
  }
  template <bool kM> static void load(const T* x, int64_t P, int64_t p, __mmask16 m, __m512& x1, __m512& x2) {
    x1 = widen16<kM>(m, x + p);
    x2 = widen16<kM>(m, x + P + p);
  }
  template <bool kM> static void store(T* o, int64_t P, int64_t p, __mmask16 m, __m512 o1, __m512 o2) {
    const __m512i both = narrow32(o1, o2);  // words 0..15 = o1, 16..31 = o2
    store16<kM>(m, o + p, _mm512_castsi512_si256(both));
    store16<kM>(m, o + P + p, _mm512_extracti64x4_epi64(both, 1));
  }
};

// One step of 16 pairs (p..p+15) in each of K heads, with the cos/sin lanes loaded once.
template <class Access, bool kM, int K>
inline void avx512_step(const typename Access::T* x, typename Access::T* out, int64_t h_step, const float* c,
                        const float* s, int64_t P, int64_t p, __mmask16 m) {
  const __m512 cv = load_ps<kM>(m, c + p), sv = load_ps<kM>(m, s + p);
  for (int j = 0; j < K; ++j) {
    __m512 x1, x2;
    Access::template load<kM>(x + j * h_step, P, p, m, x1, x2);
    const __m512 o1 = _mm512_sub_ps(_mm512_mul_ps(x1, cv), _mm512_mul_ps(x2, sv));
    const __m512 o2 = _mm512_add_ps(_mm512_mul_ps(x2, cv), _mm512_mul_ps(x1, sv));
    Access::template store<kM>(out + j * h_step, P, p, m, o1, o2);
  }
}

template <class Access, int K>
void avx512_heads(const Run& r) {
  using T = typename Access::T;
  const int64_t full = r.P / 16 * 16;
  const __mmask16 tail = lanes(r.P - full);
  for (int64_t i = 0; i < r.rows; ++i) {
    const T* x = static_cast<const T*>(r.x) + i * r.x_step;
    T* out = static_cast<T*>(r.out) + i * r.x_step;
    const float *c = r.c + i * r.t_step, *s = r.s + i * r.t_step;
    for (int64_t p = 0; p < full; p += 16) avx512_step<Access, false, K>(x, out, r.h_step, c, s, r.P, p, 0xFFFF);
    if (full < r.P) avx512_step<Access, true, K>(x, out, r.h_step, c, s, r.P, full, tail);
    for (int j = 0; j < K; ++j) pass_through(x + j * r.h_step, out + j * r.h_step, r.P, r.D);
  }
}

// Heads in groups of kHeadsPerStep, then the rest one at a time.
template <class Access>
void avx512_run(const Run& run) {
  // interleaved rows back to back in x and in the tables, no pass-through: one flat row of rows * P pairs (no per-row overhead)
  const bool flat = Access::kFlat && run.D == 2 * run.P && run.x_step == run.D && run.t_step == run.P;
  Run r = run;
  if (flat) r.rows = 1, r.P = run.rows * run.P, r.D = run.rows * run.D;
  using T = typename Access::T;
  int64_t h = 0;
  for (; h + kHeadsPerStep <= run.heads; h += kHeadsPerStep, r.x = static_cast<const T*>(r.x) + kHeadsPerStep * r.h_step,
       r.out = static_cast<T*>(r.out) + kHeadsPerStep * r.h_step)
    avx512_heads<Access, kHeadsPerStep>(r);
  for (; h < run.heads; ++h, r.x = static_cast<const T*>(r.x) + r.h_step, r.out = static_cast<T*>(r.out) + r.h_step)
    avx512_heads<Access, 1>(r);
}

#pragma GCC pop_options
#endif

bool has_avx512() {
#ifdef ROPE_LAB_AVX512
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

// The run function for (isa, dtype, layout), or nullptr where that isa does not cover it.
RunFn run_fn(const std::string& isa, bool bf16, bool interleaved) {
#ifdef ROPE_LAB_AVX512
  if (isa == "avx512" && has_avx512()) {
    if (interleaved) return bf16 ? avx512_run<InterleavedBF16> : avx512_run<InterleavedF32>;
    return bf16 ? avx512_run<HalfBF16> : avx512_run<HalfF32>;
  }
#endif
  if (isa == "avx2" && __builtin_cpu_supports("avx2") && bf16 && interleaved) return avx2_interleaved_bf16;
  return nullptr;
}

// A fresh output buffer (glibc maps every allocation above its mmap threshold anew) would be faulted in page by page
// by the kernel's first stores, each fault stopping the thread between two steps of compute. MADV_POPULATE_WRITE
// (Linux 5.14+) maps a range in one call, about 1.5x faster than first-touch faults here; each thread maps its own
// share. Memory that is already mapped (reused by the allocator) is left alone: populating mapped pages still
// walks them, so a resident last page (mincore) skips it. Where the call is refused (older kernels: EINVAL), the
// stores fault the pages in as before. Not with huge pages (torch's THP_MEM_ALLOC_ENABLE=1, or the kernel's THP
// mode "always"): a fault then maps 2 MiB, which the stores that follow find in L2, while populating first zeroes
// the whole buffer ahead of them (measured 1.13x -> 1.24x the clone floor, 1-D fp32, fresh pages + THP).
bool huge_pages() {
  static const bool on = [] {
    const char* torch_thp = std::getenv("THP_MEM_ALLOC_ENABLE");
    if (torch_thp != nullptr && std::string(torch_thp) == "1") return true;
    std::ifstream mode("/sys/kernel/mm/transparent_hugepage/enabled");
    std::string text((std::istreambuf_iterator<char>(mode)), std::istreambuf_iterator<char>());
    return text.find("[always]") != std::string::npos;
  }();
  return on;
}

bool populate(void* data, int64_t bytes) {
#ifdef MADV_POPULATE_WRITE
  if (huge_pages()) return false;
  static const int64_t page = sysconf(_SC_PAGESIZE);
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(data) + bytes) / page * page;
  if (hi < lo + (int64_t(1) << 21)) return false;  // under 2 MiB: not worth a system call
  unsigned char resident = 0;
  if (mincore(reinterpret_cast<void*>(hi - page), page, &resident) != 0 || (resident & 1)) return false;
  const int64_t pages = (hi - lo) / page;
  at::parallel_for(0, pages, 256, [&](int64_t first, int64_t last) {
    madvise(reinterpret_cast<void*>(lo + first * page), (last - first) * page, MADV_POPULATE_WRITE);
  });
  return true;
#else
  return false;
#endif
}

inline int64_t bstride(const torch::Tensor& t, int dim) { return t.size(dim) == 1 ? 0 : t.stride(dim); }

// Work units: a block of tokens of one batch row x a group of heads. Runs go along x's memory: over tokens for
// (B, H, N, D) memory, over heads for (B, N, H, D) memory (q/k straight from a linear). Every head of a unit reads
// the same table rows, so they are read from memory once per unit. When one batch row's tables (2P floats a token)
// fit in L2 with room to spare, a block is the whole sequence: the heads then stream their slices of x in one run,
// kHeadsPerStep at a time (64-token runs restarted the hardware prefetcher every 8 KiB: 1.24x vs 1.12x the clone
// floor, 1-D bf16);
// larger per-token tables (3-D positions: 1 MiB a row) are walked in blocks of 256 tokens that stay in L2 while
// every head reads them (inductor's order re-reads them per head: 1.31x vs 1.16x). Heads are split into groups
// only when there are too few units to keep every thread busy.
struct Tiling { int64_t tokens, blocks, heads, groups, units; };

Tiling tiling(int64_t B, int64_t H, int64_t N, int64_t P) {
  constexpr int64_t kL2Share = 512 << 10;
  const int64_t tokens = N * P * 8 <= kL2Share ? std::max<int64_t>(N, 1) : 256;
  const int64_t blocks = (N + tokens - 1) / tokens;
  int64_t groups = 1;
  while (B * blocks * groups < 4 * at::get_num_threads() && groups < H) groups *= 2;
  groups = std::min(groups, H);
  const int64_t heads = (H + groups - 1) / groups;
  groups = (H + heads - 1) / heads;
  return {tokens, blocks, heads, groups, B * blocks * groups};
}

// The kernel indexes sin with cos's strides; a dimension of size 1 is never stepped, so its stride may differ
// (torch gives size-1 dimensions arbitrary strides: (1, N, 1, P) tables from a transpose and from .neg() differ).
bool same_strides(const torch::Tensor& a, const torch::Tensor& b) {
  for (int d = 0; d < a.dim(); ++d)
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) return false;
  return true;
}

}  // namespace

// Whether populate() mapped t's pages now (false: too small, already mapped, huge pages, or no MADV_POPULATE_WRITE).
bool populate_pages(const torch::Tensor& t) { return populate(t.data_ptr(), t.numel() * t.element_size()); }

// The instruction sets this CPU runs, best first.
std::vector<std::string> isas() {
  std::vector<std::string> out;
  if (has_avx512()) out.push_back("avx512");
  if (__builtin_cpu_supports("avx2")) out.push_back("avx2");
  return out;
}

bool supports(const std::string& isa, bool bf16, bool interleaved) { return run_fn(isa, bf16, interleaved); }

// One tensor to rotate: x and its output (the same strides), its heads numbered after the previous operand's.
struct Operand { const char* x; char* out; int64_t xb, xh, xn, heads; };

// xs: tensors (B, H_i, N, D) of one dtype, unit last stride, dense, all head-major or all token-major; cos, sin
// (B|1, H|1, N, P) fp32, unit last stride, shared by all (per-head tables need every H_i == H). Returns the
// rotations with the inputs' strides. Rotating q and k in one call reads a block's table rows once for both.
std::vector<torch::Tensor> rotate_all(const std::vector<torch::Tensor>& xs, const torch::Tensor& cos,
                                      const torch::Tensor& sin, bool interleaved, const std::string& isa) {
  TORCH_CHECK(!xs.empty(), "nothing to rotate");
  const torch::Tensor& x0 = xs.front();
  const bool bf16 = x0.scalar_type() == at::kBFloat16;
  TORCH_CHECK(cos.scalar_type() == at::kFloat && sin.scalar_type() == at::kFloat && cos.dim() == 4 &&
              cos.stride(3) == 1 && sin.stride(3) == 1 && cos.sizes() == sin.sizes() && same_strides(cos, sin),
              "cos/sin: 4-D fp32, same shape and strides (of their dimensions longer than 1), unit last stride");
  const RunFn fn = run_fn(isa, bf16, interleaved);
  TORCH_CHECK(fn != nullptr, "cpu_rope: isa '", isa, "' does not cover this dtype/layout on this CPU");
  const int64_t B = x0.dim() == 4 ? x0.size(0) : 0, N = x0.dim() == 4 ? x0.size(2) : 0;
  const int64_t D = x0.dim() == 4 ? x0.size(3) : 0, P = cos.size(3);
  TORCH_CHECK(2 * P <= D, "cos/sin have more pairs than x has channels");
  const bool head_major = x0.dim() == 4 && x0.stride(2) <= x0.stride(1);
  std::vector<torch::Tensor> outs;
  std::vector<Operand> ops;
  int64_t H = 0;
  for (const auto& x : xs) {
    TORCH_CHECK(x.scalar_type() == x0.scalar_type() && (bf16 || x.scalar_type() == at::kFloat) && x.dim() == 4 &&
                x.stride(3) == 1, "x: 4-D fp32 or bf16 with unit last stride, one dtype for all");
    TORCH_CHECK(x.size(0) == B && x.size(2) == N && x.size(3) == D && (x.stride(2) <= x.stride(1)) == head_major,
                "tensors rotated together need the same batch, length, head size and memory order");
    TORCH_CHECK(cos.size(1) == 1 || cos.size(1) == x.size(1), "per-head tables need as many heads as x");
    auto out = torch::empty_like(x);
    TORCH_CHECK(out.strides() == x.strides(), "x must be dense (its strides are kept for the output)");
    populate(out.data_ptr(), out.numel() * out.element_size());
    ops.push_back({static_cast<const char*>(x.data_ptr()), static_cast<char*>(out.data_ptr()), x.stride(0),
                   x.stride(1), x.stride(2), x.size(1)});
    H += x.size(1);
    outs.push_back(out);
  }
  if (B * N * D == 0 || H == 0) return outs;
  const int64_t elem = x0.element_size();
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  const int64_t tb = bstride(cos, 0), th = bstride(cos, 1), tn = bstride(cos, 2);
  const Tiling tile = tiling(B, H, N, P);
  const bool shared = head_major && th == 0;  // a unit's heads share table rows: one run covers them all
  at::parallel_for(0, tile.units, std::max<int64_t>(1, 65536 / (tile.tokens * tile.heads * D)), [&](int64_t lo, int64_t hi) {
    for (int64_t unit = lo; unit < hi; ++unit) {
      const int64_t g = unit % tile.groups, blk = unit / tile.groups % tile.blocks, b = unit / tile.groups / tile.blocks;
      const int64_t n0 = blk * tile.tokens, n1 = std::min(N, n0 + tile.tokens);
      int64_t first = 0;  // the operand's first head in the unit's numbering
      for (const Operand& o : ops) {
        const int64_t h0 = std::max<int64_t>(g * tile.heads - first, 0);
        const int64_t h1 = std::min<int64_t>((g + 1) * tile.heads - first, o.heads);
        first += o.heads;
        if (h0 >= h1) continue;
        const int64_t outer = head_major ? (shared ? 1 : h1 - h0) : n1 - n0;
        for (int64_t j = 0; j < outer; ++j) {
          const int64_t h = head_major ? h0 + j : h0, n = head_major ? n0 : n0 + j;
          const int64_t x_off = (b * o.xb + h * o.xh + n * o.xn) * elem, t_off = b * tb + h * th + n * tn;
          Run run{o.x + x_off, o.out + x_off, cp + t_off, sp + t_off, head_major ? n1 - n0 : h1 - h0,
                  head_major ? o.xn : o.xh, head_major ? tn : th, P, D};
          if (shared) run.heads = h1 - h0, run.h_step = o.xh;
          fn(run);
        }
      }
    }
  });
  return outs;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("isas", &isas, "instruction sets of this CPU the kernel has code for, best first");
  m.def("supports", &supports, "whether an isa covers (bf16, interleaved)");
  m.def("populate_pages", &populate_pages, "map a fresh buffer's pages in one call per thread (see populate)");
  m.def("rotate_all", &rotate_all, "rotary rotation of tensors (q and k) by the same fp32 tables, one pass (x86 SIMD)");
}
