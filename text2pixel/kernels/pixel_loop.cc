// The pixel loop of alignPixelRNN as fused TensorFlow ops: teacher-forced forward and backward
// (training), and decode (scoring, greedy and ancestral sampling; see PixelLoopDecodeOp).
//
// Why: on a CPU the 1,024-step loop built from TensorFlow ops is bound by per-op overhead (about
// 60 small ops per pixel, forward and backward), not by arithmetic. Here one op runs all steps.
// It computes what text2pixel.model's reference cell computes (tests compare them; the decoder
// sums eq. 7's part of the attention vector in another order, see decode_step):
//
//   z_j     = X_j + [a_{j-1} ; h_{j-1}] W_rec          X_j = features_j W_in + b
//   X_j     = base + sum_f tables[ids_jf]   (every feature is an embedding row, so its product
//             with W_in is a row of a precomputed table; base = b, plus the `mean` context's part)
//   i,f,g,o = sigmoid, sigmoid, tanh, sigmoid of z_j's four blocks (Keras' gate order)
//   c_j     = f * c_{j-1} + i * g,   h_j = o * tanh(c_j)                            (eq. 6)
//   e_ji    = h_j . keys_i  (keys = W_a h^lang_i), -inf where word i is padding      (eq. 9)
//   alpha_j = softmax_i(e_j)                                                         (eq. 8)
//   ctx_j   = sum_i alpha_ji values_i  (values = h^lang_i)                           (eq. 7)
//   a_j     = tanh([h_j ; ctx_j] W_c)                   (Luong's attention vector, fed back)
//
// with a_{-1} = h_{-1} = c_{-1} = 0. With an attention kernel of zero columns (the `mean` and
// `none` conditionings) the attention part is skipped and W_rec has only the h rows.
//
// Batch rows are independent through the whole recurrence, so each thread runs every step on its
// own slice of the batch: no synchronisation inside the loop. The weight gradients
// (sum_j x_j^T dz_j) are left to one large matmul in Python, from the saved activations.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace text2pixel {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::errors::InvalidArgument;

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
typedef __m256 v8;
static inline v8 load8(const float* p) { return _mm256_loadu_ps(p); }
static inline void store8(float* p, v8 v) { _mm256_storeu_ps(p, v); }
static inline v8 broadcast8(const float* p) { return _mm256_broadcast_ss(p); }
static inline v8 zero8() { return _mm256_setzero_ps(); }
static inline v8 fma8(v8 a, v8 b, v8 c) { return _mm256_fmadd_ps(a, b, c); }
static inline v8 max8(v8 a, v8 b) { return _mm256_max_ps(a, b); }
#else  // portable: GCC vector extensions
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));
static inline v8 load8(const float* p) { return *reinterpret_cast<const v8u*>(p); }
static inline void store8(float* p, v8 v) { *reinterpret_cast<v8u*>(p) = v; }
static inline v8 broadcast8(const float* p) { return v8{*p, *p, *p, *p, *p, *p, *p, *p}; }
static inline v8 zero8() { return v8{}; }
static inline v8 fma8(v8 a, v8 b, v8 c) { return a * b + c; }
static inline v8 max8(v8 a, v8 b) { return a > b ? a : b; }
#endif

// A weight matrix B [K, N] repacked once per op call into column panels of 16 (32 with
// AVX-512; then 8, then 1) columns, each panel's K rows contiguous. Streaming B row by row in its
// own layout would step by N floats, and with N a power of two every row maps to the same few L1
// sets (measured: 34% of the FMA peak for [16 x 192] x [192 x 512]); a panel is read
// sequentially. Blocks of 6 rows x 16 columns (12 accumulators) measured fastest on AVX2 for the
// 8 rows a thread has at batch 16.
struct Packed {
  int K = 0, N = 0;
  std::vector<float> data;
};

// With AVX-512 the widest panels are 32 columns (two 16-float registers): blocks of 8 rows x 32
// columns keep 16 accumulators of the 32 registers, and each FMA does twice an AVX2 one's work.
// The sums are the same, in the same order, as the AVX2 path's (each output adds its K products
// one by one with FMA), so results do not depend on which path a machine takes.
#if defined(__AVX512F__)
constexpr int kWidestPanel = 32;
#else
constexpr int kWidestPanel = 16;
#endif

static Packed pack(const float* B, int K, int N) {
  Packed p;
  p.K = K;
  p.N = N;
  p.data.resize((size_t)K * N);
  float* out = p.data.data();
  int n = 0;
  for (const int width : {32, 16, 8, 1})
    for (; width <= kWidestPanel && n + width <= N; n += width)
      for (int k = 0; k < K; ++k)
        for (int w = 0; w < width; ++w) *out++ = B[(size_t)k * N + n + w];
  return p;
}

// C[r, n0 : n0 + WIDTH] (+)= sum_k A[r, k] panel[k, :] for ROWS rows: ROWS x WIDTH outputs kept
// in registers, each loaded vector of the panel serving every row.
template <int ROWS, int WIDTH>
static inline void panel_rows(const float* A, int lda, const float* panel, int K, float* C,
                              int ldc, bool accumulate) {
  constexpr int VECS = WIDTH / 8;
  v8 acc[ROWS][VECS];
  for (int r = 0; r < ROWS; ++r)
    for (int v = 0; v < VECS; ++v) acc[r][v] = accumulate ? load8(C + r * ldc + 8 * v) : zero8();
  for (int k = 0; k < K; ++k, panel += WIDTH) {
    v8 b[VECS];
    for (int v = 0; v < VECS; ++v) b[v] = load8(panel + 8 * v);
    for (int r = 0; r < ROWS; ++r) {
      const v8 a = broadcast8(A + r * lda + k);
      for (int v = 0; v < VECS; ++v) acc[r][v] = fma8(a, b[v], acc[r][v]);
    }
  }
  for (int r = 0; r < ROWS; ++r)
    for (int v = 0; v < VECS; ++v) store8(C + r * ldc + 8 * v, acc[r][v]);
}

#if defined(__AVX512F__)
// panel_rows for 32-column panels in 16-float registers.
template <int ROWS>
static inline void panel_rows32(const float* A, int lda, const float* panel, int K, float* C,
                                int ldc, bool accumulate) {
  __m512 acc[ROWS][2];
  for (int r = 0; r < ROWS; ++r)
    for (int v = 0; v < 2; ++v)
      acc[r][v] = accumulate ? _mm512_loadu_ps(C + r * ldc + 16 * v) : _mm512_setzero_ps();
  for (int k = 0; k < K; ++k, panel += 32) {
    const __m512 b0 = _mm512_loadu_ps(panel), b1 = _mm512_loadu_ps(panel + 16);
    for (int r = 0; r < ROWS; ++r) {
      const __m512 a = _mm512_set1_ps(A[r * lda + k]);
      acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
    }
  }
  for (int r = 0; r < ROWS; ++r)
    for (int v = 0; v < 2; ++v) _mm512_storeu_ps(C + r * ldc + 16 * v, acc[r][v]);
}

static void panel32_all_rows(int R, const float* A, int lda, const float* panel, int K,
                             float* C, int ldc, bool accumulate) {
  int r = 0;
  for (; r + 8 <= R; r += 8)
    panel_rows32<8>(A + r * lda, lda, panel, K, C + r * ldc, ldc, accumulate);
  A += r * lda;
  C += r * ldc;
  switch (R - r) {
    case 7: panel_rows32<7>(A, lda, panel, K, C, ldc, accumulate); break;
    case 6: panel_rows32<6>(A, lda, panel, K, C, ldc, accumulate); break;
    case 5: panel_rows32<5>(A, lda, panel, K, C, ldc, accumulate); break;
    case 4: panel_rows32<4>(A, lda, panel, K, C, ldc, accumulate); break;
    case 3: panel_rows32<3>(A, lda, panel, K, C, ldc, accumulate); break;
    case 2: panel_rows32<2>(A, lda, panel, K, C, ldc, accumulate); break;
    case 1: panel_rows32<1>(A, lda, panel, K, C, ldc, accumulate); break;
  }
}
#endif

template <int WIDTH>
static void panel_all_rows(int R, const float* A, int lda, const float* panel, int K, float* C,
                           int ldc, bool accumulate) {
  int r = 0;  // every block of rows reuses the panel while it is in L1
  for (; r + 6 <= R; r += 6)
    panel_rows<6, WIDTH>(A + r * lda, lda, panel, K, C + r * ldc, ldc, accumulate);
  A += r * lda;
  C += r * ldc;
  switch (R - r) {
    case 5: panel_rows<5, WIDTH>(A, lda, panel, K, C, ldc, accumulate); break;
    case 4: panel_rows<4, WIDTH>(A, lda, panel, K, C, ldc, accumulate); break;
    case 3: panel_rows<3, WIDTH>(A, lda, panel, K, C, ldc, accumulate); break;
    case 2: panel_rows<2, WIDTH>(A, lda, panel, K, C, ldc, accumulate); break;
    case 1: panel_rows<1, WIDTH>(A, lda, panel, K, C, ldc, accumulate); break;
  }
}

// C[R, N] (+)= A[R, K] B[K, N], B packed; A and C row-major with leading dimensions lda, ldc.
static void gemm(int R, const float* A, int lda, const Packed& B, float* C, int ldc,
                 bool accumulate) {
  const int K = B.K, N = B.N;
  const float* panel = B.data.data();
  int n = 0;
#if defined(__AVX512F__)
  for (; n + 32 <= N; n += 32, panel += 32 * K)
    panel32_all_rows(R, A, lda, panel, K, C + n, ldc, accumulate);
#endif
  for (; n + 16 <= N; n += 16, panel += 16 * K)
    panel_all_rows<16>(R, A, lda, panel, K, C + n, ldc, accumulate);
  for (; n + 8 <= N; n += 8, panel += 8 * K)
    panel_all_rows<8>(R, A, lda, panel, K, C + n, ldc, accumulate);
  for (; n < N; ++n, panel += K)
    for (int r = 0; r < R; ++r) {
      float sum = accumulate ? C[r * ldc + n] : 0.f;
      for (int k = 0; k < K; ++k) sum += A[r * lda + k] * panel[k];
      C[r * ldc + n] = sum;
    }
}

// Vectorised tanh (Eigen's, as TensorFlow's own ops use) over n floats, in place.
static void tanh_inplace(float* x, int n) {
  Eigen::Map<Eigen::ArrayXf> a(x, n);
  a = a.tanh();
}

static void exp_inplace(float* x, int n) {
  Eigen::Map<Eigen::ArrayXf> a(x, n);
  a = a.exp();
}

// The 8 lanes of v added in a fixed order (the reductions below end with it).
static inline float lane_sum(v8 v) {
  float lanes[8];
  store8(lanes, v);
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
         ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

// sum_i x[i] y[i], vectorised (a plain loop is a serial chain of FMAs: without -ffast-math the
// compiler may not reorder a float sum).
static inline float dot(const float* x, const float* y, int n) {
  v8 acc0 = zero8(), acc1 = zero8();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = fma8(load8(x + i), load8(y + i), acc0);
    acc1 = fma8(load8(x + i + 8), load8(y + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = fma8(load8(x + i), load8(y + i), acc0);
  float sum = lane_sum(acc0 + acc1);
  for (; i < n; ++i) sum += x[i] * y[i];
  return sum;
}

// The largest of x[0 .. n), and the sum of x[0 .. n) in a fixed order: vectorised, because a plain
// loop is a serial chain (one add or compare per cycle or slower) and the decoder runs one of each
// over the 256 levels at every pixel of every image (15% of scoring's perf samples before).
static inline float max_of(const float* x, int n) {
  float top = -INFINITY;
  int i = 0;
  if (n >= 8) {
    v8 acc = load8(x);
    for (i = 8; i + 8 <= n; i += 8) acc = max8(acc, load8(x + i));
    float lanes[8];
    store8(lanes, acc);
    for (float lane : lanes) top = std::max(top, lane);
  }
  for (; i < n; ++i) top = std::max(top, x[i]);
  return top;
}

static inline float sum_of(const float* x, int n) {
  v8 acc0 = zero8(), acc1 = zero8();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = acc0 + load8(x + i);
    acc1 = acc1 + load8(x + i + 8);
  }
  for (; i + 8 <= n; i += 8) acc0 = acc0 + load8(x + i);
  float sum = lane_sum(acc0 + acc1);
  for (; i < n; ++i) sum += x[i];
  return sum;
}

static void transpose(const float* src, int rows, int cols, float* dst) {
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
}

// Runs fn(begin, end) over [0, n) split into at most `threads` contiguous slices.
template <typename Fn>
static void parallel_slices(int n, int threads, Fn fn) {
  threads = std::max(1, std::min(threads, n));
  if (threads == 1) {
    fn(0, n);
    return;
  }
  std::vector<std::thread> pool;
  const int per = (n + threads - 1) / threads;
  for (int t = 1; t < threads; ++t) {
    const int begin = t * per, end = std::min(n, begin + per);
    if (begin < end) pool.emplace_back(fn, begin, end);
  }
  fn(0, std::min(n, per));
  for (auto& th : pool) th.join();
}

static int thread_count(int attr) {
  if (attr > 0) return attr;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw ? static_cast<int>(hw) : 1;
}

struct Dims {
  int B, T, G, U, A, M, V, F, ROWS;
};

// Inputs: 0 tables [ROWS, G], 1 ids [B, T, F] (the decode op: [T, F]), 2 base [B, G],
// 3 recurrent kernel [A + U, G], 4 keys [B, M, U], 5 values [B, M, V], 6 memory mask [B, M],
// 7 attention kernel [U + V, A].
static tensorflow::Status check_dims(OpKernelContext* ctx, Dims* d, int ids_rank = 3) {
  const Tensor& tables = ctx->input(0);
  const Tensor& ids = ctx->input(1);
  const Tensor& base = ctx->input(2);
  const Tensor& w_rec = ctx->input(3);
  const Tensor& keys = ctx->input(4);
  const Tensor& values = ctx->input(5);
  const Tensor& mask = ctx->input(6);
  const Tensor& w_c = ctx->input(7);
  if (tables.dims() != 2 || ids.dims() != ids_rank || base.dims() != 2 || w_rec.dims() != 2 ||
      keys.dims() != 3 || values.dims() != 3 || mask.dims() != 2 || w_c.dims() != 2)
    return InvalidArgument("pixel loop: wrong ranks");
  d->ROWS = tables.dim_size(0);
  d->G = tables.dim_size(1);
  d->B = base.dim_size(0);
  d->T = ids.dim_size(ids_rank - 2);
  d->F = ids.dim_size(ids_rank - 1);
  if (ids_rank == 3 && ids.dim_size(0) != d->B)
    return InvalidArgument("pixel loop: ids and base disagree on the batch");
  d->U = d->G / 4;
  d->A = w_c.dim_size(1);
  d->M = keys.dim_size(1);
  d->V = values.dim_size(2);
  if (d->G != 4 * d->U) return InvalidArgument("pixel loop: gate width must be 4 * units");
  if (base.dim_size(0) != d->B || base.dim_size(1) != d->G)
    return InvalidArgument("pixel loop: base must be [batch, 4 * units]");
  if (w_rec.dim_size(0) != d->A + d->U || w_rec.dim_size(1) != d->G)
    return InvalidArgument("pixel loop: recurrent kernel must be [attention + units, 4 * units]");
  if (d->A > 0) {
    if (keys.dim_size(0) != d->B || keys.dim_size(2) != d->U || values.dim_size(0) != d->B ||
        values.dim_size(1) != d->M || mask.dim_size(0) != d->B || mask.dim_size(1) != d->M)
      return InvalidArgument("pixel loop: keys [B, M, units], values [B, M, V], mask [B, M]");
    if (w_c.dim_size(0) != d->U + d->V)
      return InvalidArgument("pixel loop: attention kernel must be [units + V, attention]");
    if (d->M == 0 || d->M > 256)
      return InvalidArgument("pixel loop: attention over 1 to 256 words");
  }
  const int* id = ids.flat<int>().data();
  for (int64_t i = 0; i < ids.NumElements(); ++i)
    if (id[i] < 0 || id[i] >= d->ROWS)
      return InvalidArgument("pixel loop: table row id ", id[i], " outside [0, ", d->ROWS, ")");
  return tensorflow::OkStatus();
}

// ---------------------------------------------------------------------------------------------

// What every thread of one forward or decode call shares: the dimensions, the inputs and the
// packed weights (inputs 0 and 2-7 as in check_dims).
struct Loop {
  Dims d;
  int S;  // width of the recurrent input [a ; h]
  const float *tables, *base, *keys, *values, *mask;
  Packed W_rec, W_c;

  Loop(OpKernelContext* ctx, const Dims& dims, bool pack_attention_kernel = true)
      : d(dims), S(dims.A + dims.U) {
    tables = ctx->input(0).flat<float>().data();
    base = ctx->input(2).flat<float>().data();
    keys = ctx->input(4).flat<float>().data();
    values = ctx->input(5).flat<float>().data();
    mask = ctx->input(6).flat<float>().data();
    W_rec = pack(ctx->input(3).flat<float>().data(), S, d.G);
    if (pack_attention_kernel) W_c = pack(ctx->input(7).flat<float>().data(), d.U + d.V, d.A);
  }
};

// One thread's batch rows [b0, b0 + R) and their state from one pixel to the next.
struct Rows {
  int b0, R;
  std::vector<float> s;      // [R, A + U]  [a_j ; h_j], the next step's recurrent input
  std::vector<float> z;      // [R, G]      X_j, then the gates after their nonlinearities
  std::vector<float> c;      // [R, U]      c_j
  std::vector<float> hc;     // [R, U + V]  [h_j ; ctx_j]
  std::vector<float> tc;     // [R, U]      tanh(c_j)
  std::vector<float> alpha;  // [R, M]      alpha_j

  Rows(const Dims& d, int first, int count)
      : b0(first), R(count), s((size_t)count * (d.A + d.U), 0.f), z((size_t)count * d.G),
        c((size_t)count * d.U, 0.f), hc((size_t)count * (d.U + d.V)),
        tc((size_t)count * d.U), alpha((size_t)count * d.M) {}
};

// z_r = X_j = base + sum_f tables[ids_f] for each row r; row r's F table ids start at
// ids + r * stride.
static void input_part(const Loop& L, Rows& w, const int* ids, size_t stride) {
  const int G = L.d.G, F = L.d.F;
  for (int r = 0; r < w.R; ++r) {
    float* zr = &w.z[(size_t)r * G];
    std::memcpy(zr, L.base + (size_t)(w.b0 + r) * G, G * sizeof(float));
    const int* id = ids + r * stride;
    for (int f = 0; f < F; ++f) {
      const float* row = L.tables + (size_t)id[f] * G;
      for (int k = 0; k < G; ++k) zr[k] += row[k];
    }
  }
}

// Eq. 6 for w's rows, z holding X_j on entry: z = X_j + [a_{j-1} ; h_{j-1}] W_rec, then the gates
// (left in z), c_j in c and h_j in s (the next step's recurrent input).
static void lstm_step(const Loop& L, Rows& w) {
  const int R = w.R, G = L.d.G, U = L.d.U, A = L.d.A, S = L.S;
  float* z = w.z.data();
  gemm(R, w.s.data(), S, L.W_rec, z, G, true);
  // Gates: sigmoid(x) = (1 + tanh(x / 2)) / 2 keeps every transcendental vectorised.
  for (int r = 0; r < R; ++r) {
    float* zr = &z[r * G];
    for (int k = 0; k < 2 * U; ++k) zr[k] *= 0.5f;      // i, f
    for (int k = 3 * U; k < G; ++k) zr[k] *= 0.5f;      // o
  }
  tanh_inplace(z, R * G);
  for (int r = 0; r < R; ++r) {
    float* zr = &z[r * G];
    for (int k = 0; k < 2 * U; ++k) zr[k] = 0.5f * zr[k] + 0.5f;
    for (int k = 3 * U; k < G; ++k) zr[k] = 0.5f * zr[k] + 0.5f;
    float* cr = &w.c[r * U];
    float* tr = &w.tc[r * U];
    for (int u = 0; u < U; ++u) {
      cr[u] = zr[U + u] * cr[u] + zr[u] * zr[2 * U + u];
      tr[u] = cr[u];
    }
  }
  tanh_inplace(w.tc.data(), R * U);
  for (int r = 0; r < R; ++r) {
    const float* zr = &z[r * G];
    float* h = &w.s[r * S + A];
    for (int u = 0; u < U; ++u) h[u] = zr[3 * U + u] * w.tc[r * U + u];
  }
}

// Eqs. 9 and 8 for batch row b: alpha [M] from h_j, 0 at padding.
static void attention_weights(const Loop& L, int b, const float* h, float* alpha) {
  const int U = L.d.U, M = L.d.M;
  float top = -INFINITY;
  for (int m = 0; m < M; ++m) {  // eq. 9
    if (L.mask[b * M + m] > 0.f) {
      const float e = dot(h, L.keys + ((size_t)b * M + m) * U, U);
      alpha[m] = e;
      top = std::max(top, e);
    } else {
      alpha[m] = -INFINITY;
    }
  }
  float total = 0.f;  // eq. 8
  for (int m = 0; m < M; ++m) {
    alpha[m] = L.mask[b * M + m] > 0.f ? std::exp(alpha[m] - top) : 0.f;
    total += alpha[m];
  }
  for (int m = 0; m < M; ++m) alpha[m] /= total;
}

// Pixel j for w's rows, z holding X_j on entry: eq. 6's LSTM, then eqs. 9, 8, 7 and the
// attention vector. Leaves the gates in z, c_j in c, [a_j ; h_j] in s, alpha_j in alpha and
// [h_j ; ctx_j] in hc (the backward op needs ctx_j).
static void pixel_step(const Loop& L, Rows& w) {
  const int R = w.R, U = L.d.U, A = L.d.A, M = L.d.M, V = L.d.V, S = L.S;
  lstm_step(L, w);
  if (!A) return;
  for (int r = 0; r < R; ++r) {
    const int b = w.b0 + r;
    const float* h = &w.s[r * S + A];
    float* alpha = &w.alpha[r * M];
    attention_weights(L, b, h, alpha);
    float* hcr = &w.hc[r * (U + V)];  // [h_j ; ctx_j]
    std::memcpy(hcr, h, U * sizeof(float));
    float* context = hcr + U;  // eq. 7
    std::fill(context, context + V, 0.f);
    for (int m = 0; m < M; ++m) {
      const float weight = alpha[m];
      if (weight == 0.f) continue;
      const float* value = L.values + ((size_t)b * M + m) * V;
      for (int v = 0; v < V; ++v) context[v] += weight * value[v];
    }
  }
  // a_j = tanh([h_j ; ctx_j] W_c), written straight into the next recurrent input.
  gemm(R, w.hc.data(), U + V, L.W_c, w.s.data(), S, false);
  for (int r = 0; r < R; ++r) tanh_inplace(&w.s[r * S], A);
}

// The decoders' pixel step: pixel_step's function without forming ctx_j. Eq. 7's context only
// feeds the attention vector, and a_j = tanh([h_j ; ctx_j] W_c) = tanh(h_j W_c[:U] + sum_i
// alpha_ji (values_i W_c[U:])): with each image's values multiplied by W_c's lower block once
// per call (value_proj [rows, M, A]), a pixel reads M rows of A floats per image instead of that
// V x A block (paper: 2 MB at every pixel, a sixth of the weights it streams from L3; experiments/
// NOTEBOOK.md, "Values through W_c once per call"). The sums run in another order than
// pixel_step's, so results agree to rounding, not bit for bit.
static void decode_step(const Loop& L, const Packed& W_c_h, const float* value_proj, Rows& w) {
  const int R = w.R, A = L.d.A, M = L.d.M, S = L.S;
  lstm_step(L, w);
  if (!A) return;
  gemm(R, &w.s[A], S, W_c_h, w.s.data(), S, false);  // h_j W_c[:U] into a_j's place
  for (int r = 0; r < R; ++r) {
    float* alpha = &w.alpha[r * M];
    attention_weights(L, w.b0 + r, &w.s[r * S + A], alpha);
    float* a = &w.s[r * S];
    for (int m = 0; m < M; ++m) {
      const float weight = alpha[m];
      if (weight == 0.f) continue;
      const float* projected = value_proj + ((size_t)r * M + m) * A;
      for (int k = 0; k < A; ++k) a[k] += weight * projected[k];
    }
    tanh_inplace(a, A);
  }
}

class PixelLoopForwardOp : public OpKernel {
 public:
  explicit PixelLoopForwardOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("num_threads", &num_threads_));
  }

  void Compute(OpKernelContext* ctx) override {
    Dims d;
    OP_REQUIRES_OK(ctx, check_dims(ctx, &d));
    const int B = d.B, T = d.T, G = d.G, U = d.U, A = d.A, M = d.M, V = d.V, F = d.F;
    Tensor *h_t, *c_t, *gates_t, *alpha_t, *ctx_t, *a_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({B, T, U}), &h_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({B, T, U}), &c_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({B, T, G}), &gates_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({B, T, A ? M : 0}), &alpha_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({B, T, A ? V : 0}), &ctx_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(5, TensorShape({B, T, A}), &a_t));
    const int* ids = ctx->input(1).flat<int>().data();
    float* H = h_t->flat<float>().data();
    float* C = c_t->flat<float>().data();
    float* GATES = gates_t->flat<float>().data();
    float* ALPHA = alpha_t->flat<float>().data();
    float* CTX = ctx_t->flat<float>().data();
    float* ATT = a_t->flat<float>().data();
    const Loop L(ctx, d);

    parallel_slices(B, thread_count(num_threads_), [&](int b0, int b1) {
      Rows w(d, b0, b1 - b0);
      for (int j = 0; j < T; ++j) {
        input_part(L, w, ids + ((size_t)b0 * T + j) * F, (size_t)T * F);
        pixel_step(L, w);
        for (int r = 0; r < w.R; ++r) {  // the activations the backward op needs
          const size_t row = (size_t)(b0 + r) * T + j;
          std::memcpy(H + row * U, &w.s[r * L.S + A], U * sizeof(float));
          std::memcpy(C + row * U, &w.c[r * U], U * sizeof(float));
          std::memcpy(GATES + row * G, &w.z[r * G], G * sizeof(float));
          if (!A) continue;
          std::memcpy(ALPHA + row * M, &w.alpha[r * M], M * sizeof(float));
          std::memcpy(CTX + row * V, &w.hc[r * (U + V) + U], V * sizeof(float));
          std::memcpy(ATT + row * A, &w.s[r * L.S], A * sizeof(float));
        }
      }
    });
  }

 private:
  int num_threads_;
};

// ---------------------------------------------------------------------------------------------

class PixelLoopBackwardOp : public OpKernel {
 public:
  explicit PixelLoopBackwardOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("num_threads", &num_threads_));
  }

  void Compute(OpKernelContext* ctx) override {
    Dims d;
    OP_REQUIRES_OK(ctx, check_dims(ctx, &d));
    const int B = d.B, T = d.T, G = d.G, U = d.U, A = d.A, M = d.M, V = d.V;
    // Inputs 8..: saved forward outputs h, c, gates, alpha, ctx, a; then d h, d a.
    const int* ids = ctx->input(1).flat<int>().data();
    const float* W_rec = ctx->input(3).flat<float>().data();
    const float* keys = ctx->input(4).flat<float>().data();
    const float* values = ctx->input(5).flat<float>().data();
    const float* W_c = ctx->input(7).flat<float>().data();
    const float* H = ctx->input(8).flat<float>().data();
    const float* C = ctx->input(9).flat<float>().data();
    const float* GATES = ctx->input(10).flat<float>().data();
    const float* ALPHA = ctx->input(11).flat<float>().data();
    const float* ATT = ctx->input(13).flat<float>().data();
    const float* dH_out = ctx->input(14).flat<float>().data();
    const float* dA_out = ctx->input(15).flat<float>().data();
    OP_REQUIRES(ctx, ctx->input(14).NumElements() == (int64_t)B * T * U &&
                         ctx->input(15).NumElements() == (int64_t)B * T * A,
                InvalidArgument("pixel loop backward: gradient shapes"));
    Tensor *dx_t, *dtables_t, *dbase_t, *dkeys_t, *dvalues_t, *dpre_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({B, T, G}), &dx_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(0).shape(), &dtables_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(2).shape(), &dbase_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, ctx->input(4).shape(), &dkeys_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, ctx->input(5).shape(), &dvalues_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(5, TensorShape({B, T, A}), &dpre_t));
    float* dX = dx_t->flat<float>().data();
    float* dTABLES = dtables_t->flat<float>().data();
    float* dBASE = dbase_t->flat<float>().data();
    float* dKEYS = dkeys_t->flat<float>().data();
    float* dVALUES = dvalues_t->flat<float>().data();
    float* dPRE = dpre_t->flat<float>().data();
    std::fill(dKEYS, dKEYS + dkeys_t->NumElements(), 0.f);
    std::fill(dVALUES, dVALUES + dvalues_t->NumElements(), 0.f);
    std::fill(dBASE, dBASE + dbase_t->NumElements(), 0.f);
    const int F = d.F;
    const size_t table_size = (size_t)d.ROWS * G;
    const int threads = std::max(1, std::min(thread_count(num_threads_), B));
    // Each thread sums its own table gradient (rows are shared across the batch); added up after.
    std::vector<std::vector<float>> dtables(threads, std::vector<float>(table_size, 0.f));
    const int per_thread = (B + threads - 1) / threads;
    const int S = A + U;
    // Transposed weights, so that the backward products stream rows too.
    std::vector<float> transposed((size_t)G * S);
    transpose(W_rec, S, G, transposed.data());
    const Packed W_rec_T = pack(transposed.data(), G, S);
    transposed.resize((size_t)A * (U + V));
    transpose(W_c, U + V, A, transposed.data());
    const Packed W_c_T = pack(transposed.data(), A, U + V);

    parallel_slices(B, threads, [&](int b0, int b1) {
      const int R = b1 - b0;
      float* dtable = dtables[b0 / per_thread].data();
      std::vector<float> ds(R * S, 0.f), dc_next(R * U, 0.f), dpre(R * A), dhc(R * (U + V)),
          dz(R * G), tc(R * U);
      for (int j = T - 1; j >= 0; --j) {
        // ds holds d/d[a_j ; h_j] from step j + 1; add what the outputs receive.
        for (int r = 0; r < R; ++r) {
          const size_t row = (size_t)(b0 + r) * T + j;
          for (int k = 0; k < A; ++k) ds[r * S + k] += dA_out[row * A + k];
          for (int u = 0; u < U; ++u) ds[r * S + A + u] += dH_out[row * U + u];
        }
        if (A) {
          for (int r = 0; r < R; ++r) {
            const size_t row = (size_t)(b0 + r) * T + j;
            const float* a = ATT + row * A;
            for (int k = 0; k < A; ++k) dpre[r * A + k] = ds[r * S + k] * (1.f - a[k] * a[k]);
            std::memcpy(dPRE + row * A, &dpre[r * A], A * sizeof(float));
          }
          gemm(R, dpre.data(), A, W_c_T, dhc.data(), U + V, false);
          for (int r = 0; r < R; ++r) {
            const int b = b0 + r;
            const size_t row = (size_t)b * T + j;
            const float* alpha = ALPHA + row * M;
            const float* h = H + row * U;
            const float* dctx = &dhc[r * (U + V) + U];
            float* dh = &dhc[r * (U + V)];
            float dalpha[256];
            float weighted = 0.f;
            for (int m = 0; m < M; ++m) {
              dalpha[m] = 0.f;
              if (alpha[m] == 0.f) continue;
              const float* value = values + ((size_t)b * M + m) * V;
              float* dvalue = dVALUES + ((size_t)b * M + m) * V;
              for (int v = 0; v < V; ++v) dvalue[v] += alpha[m] * dctx[v];
              dalpha[m] = dot(dctx, value, V);
              weighted += alpha[m] * dalpha[m];
            }
            for (int m = 0; m < M; ++m) {
              if (alpha[m] == 0.f) continue;
              const float de = alpha[m] * (dalpha[m] - weighted);
              const float* key = keys + ((size_t)b * M + m) * U;
              float* dkey = dKEYS + ((size_t)b * M + m) * U;
              for (int u = 0; u < U; ++u) {
                dh[u] += de * key[u];
                dkey[u] += de * h[u];
              }
            }
            for (int u = 0; u < U; ++u) ds[r * S + A + u] += dh[u];
          }
        }
        for (int r = 0; r < R; ++r)
          std::memcpy(&tc[r * U], C + ((size_t)(b0 + r) * T + j) * U, U * sizeof(float));
        tanh_inplace(tc.data(), R * U);
        for (int r = 0; r < R; ++r) {
          const size_t row = (size_t)(b0 + r) * T + j;
          const float* gate = GATES + row * G;
          const float *i = gate, *f = gate + U, *g = gate + 2 * U, *o = gate + 3 * U;
          const float* c_prev = j ? C + (row - 1) * U : nullptr;
          const float* dh = &ds[r * S + A];
          float* dcn = &dc_next[r * U];
          float* dzr = &dz[r * G];
          for (int u = 0; u < U; ++u) {
            const float t = tc[r * U + u];
            const float dc = dcn[u] + dh[u] * o[u] * (1.f - t * t);
            dzr[u] = dc * g[u] * i[u] * (1.f - i[u]);
            dzr[U + u] = c_prev ? dc * c_prev[u] * f[u] * (1.f - f[u]) : 0.f;
            dzr[2 * U + u] = dc * i[u] * (1.f - g[u] * g[u]);
            dzr[3 * U + u] = dh[u] * t * o[u] * (1.f - o[u]);
            dcn[u] = dc * f[u];
          }
          std::memcpy(dX + row * G, dzr, G * sizeof(float));
          float* dbase = dBASE + (size_t)(b0 + r) * G;
          for (int k = 0; k < G; ++k) dbase[k] += dzr[k];
          const int* id = ids + row * F;
          for (int f = 0; f < F; ++f) {
            float* drow = dtable + (size_t)id[f] * G;
            for (int k = 0; k < G; ++k) drow[k] += dzr[k];
          }
        }
        // d[a_{j-1} ; h_{j-1}] = dz_j W_rec^T
        gemm(R, dz.data(), G, W_rec_T, ds.data(), S, false);
      }
    });
    std::copy(dtables[0].begin(), dtables[0].end(), dTABLES);
    for (int t = 1; t < threads; ++t)
      for (size_t i = 0; i < table_size; ++i) dTABLES[i] += dtables[t][i];
  }

 private:
  int num_threads_;
};

// ---------------------------------------------------------------------------------------------
// Decoding: the same loop with eq. 5's output layer inside it, so that pixel j's input can depend
// on pixels the op itself chose; its step is decode_step (pixel_step's function, eq. 7's context
// folded into W_c once per call). Three modes: "score" reads the pixels from `targets` (teacher
// forcing without gradients: log p(x | y) for retrieval), "greedy" takes each pixel's argmax,
// "sample" draws pixel j of row b by inverse CDF from softmax(logits / temperature) at
// uniforms[b, j] (the first value whose cumulative probability exceeds the uniform).
//
// Pixel j's table ids are static_ids[j] plus, for each feature f with lags[f] > 0, the pixel
// x_{j - lags[f]} (or the start symbol, the number of levels, before the image): the previous
// pixel has lag 1, the pixels above lags of about one row. log_prob[b, j] is log p(x_j | x_<j, y)
// at temperature 1 whatever the mode, as the TensorFlow samplers report it.
//
// Guided (classifier-free guidance, attr guided): rows come in pairs (2i: the caption, 2i + 1:
// the empty caption), both rows of a pair take the pixel chosen from the guided logits
// l_empty + guidance * (l_caption - l_empty) at row 2i's uniform, and log_prob is under the
// guided distribution. A pair never straddles two threads.

class PixelLoopDecodeOp : public OpKernel {
 public:
  explicit PixelLoopDecodeOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("num_threads", &num_threads_));
    std::string mode;
    OP_REQUIRES_OK(c, c->GetAttr("mode", &mode));
    mode_ = mode == "score" ? kScore : mode == "greedy" ? kGreedy : kSample;
    OP_REQUIRES_OK(c, c->GetAttr("guided", &guided_));
    OP_REQUIRES(c, !(guided_ && mode_ == kScore),
                InvalidArgument("pixel decode: guidance is for greedy or sample mode"));
  }

  void Compute(OpKernelContext* ctx) override {
    Dims d;
    OP_REQUIRES_OK(ctx, check_dims(ctx, &d, /*ids_rank=*/2));
    const int B = d.B, T = d.T, F = d.F, A = d.A, M = d.M, U = d.U;
    const Tensor& lags_t = ctx->input(8);
    const Tensor& w_out_t = ctx->input(9);
    const Tensor& b_out_t = ctx->input(10);
    const int O = A ? A : U;  // eq. 5 reads a_j, or h_j without attention
    OP_REQUIRES(ctx, lags_t.dims() == 1 && lags_t.dim_size(0) == F,
                InvalidArgument("pixel decode: lags must be [features]"));
    OP_REQUIRES(ctx, w_out_t.dims() == 2 && w_out_t.dim_size(0) == O && b_out_t.dims() == 1 &&
                         b_out_t.dim_size(0) == w_out_t.dim_size(1),
                InvalidArgument("pixel decode: output kernel [", O, ", levels], bias [levels]"));
    const int NL = w_out_t.dim_size(1);
    const int* lags = lags_t.flat<int>().data();
    const int* static_ids = ctx->input(1).flat<int>().data();
    for (int f = 0; f < F; ++f) {
      OP_REQUIRES(ctx, lags[f] >= 0, InvalidArgument("pixel decode: negative lag"));
      for (int j = 0; j < T && lags[f] > 0; ++j)
        OP_REQUIRES(ctx, static_ids[j * F + f] + NL < d.ROWS,
                    InvalidArgument("pixel decode: a pixel's table row is outside the table"));
    }
    const Tensor& targets_t = ctx->input(11);
    const Tensor& uniforms_t = ctx->input(12);
    const float temperature = ctx->input(13).scalar<float>()();
    const float guidance = ctx->input(14).scalar<float>()();
    const int pair = guided_ ? 2 : 1;  // rows that share one choice of pixel
    OP_REQUIRES(ctx, B % pair == 0,
                InvalidArgument("pixel decode: guided rows come in (caption, empty) pairs"));
    if (mode_ == kScore) {
      OP_REQUIRES(ctx, targets_t.dims() == 2 && targets_t.dim_size(0) == B &&
                           targets_t.dim_size(1) == T,
                  InvalidArgument("pixel decode: targets must be [batch, steps]"));
      const int* x = targets_t.flat<int>().data();
      for (int64_t i = 0; i < targets_t.NumElements(); ++i)
        OP_REQUIRES(ctx, x[i] >= 0 && x[i] < NL,
                    InvalidArgument("pixel decode: target ", x[i], " outside [0, ", NL, ")"));
    }
    if (mode_ == kSample) {
      OP_REQUIRES(ctx, uniforms_t.dims() == 2 && uniforms_t.dim_size(0) == B &&
                           uniforms_t.dim_size(1) == T,
                  InvalidArgument("pixel decode: uniforms must be [batch, steps]"));
      OP_REQUIRES(ctx, temperature > 0.f, InvalidArgument("pixel decode: temperature must be > 0"));
    }
    Tensor *pixels_t, *log_prob_t, *alpha_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({B, T}), &pixels_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({B, T}), &log_prob_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({B, T, A ? M : 0}), &alpha_t));
    int* PIX = pixels_t->flat<int>().data();
    float* LOGP = log_prob_t->flat<float>().data();
    float* ALPHA = alpha_t->flat<float>().data();
    const int* targets = mode_ == kScore ? targets_t.flat<int>().data() : nullptr;
    const float* uniforms = mode_ == kSample ? uniforms_t.flat<float>().data() : nullptr;
    const float* b_out = b_out_t.flat<float>().data();
    const Loop L(ctx, d, /*pack_attention_kernel=*/false);
    const Packed W_out = pack(w_out_t.flat<float>().data(), O, NL);
    // W_c's blocks: the rows that multiply h_j, and those that multiply the values (decode_step).
    const float* w_c = ctx->input(7).flat<float>().data();
    const Packed W_c_h = pack(w_c, U, A), W_c_v = pack(w_c + (size_t)U * A, d.V, A);

    parallel_slices(B / pair, thread_count(num_threads_), [&](int p0, int p1) {
      const int b0 = p0 * pair, b1 = p1 * pair;
      Rows w(d, b0, b1 - b0);
      const int R = w.R;
      std::vector<int> ids((size_t)R * F);
      std::vector<float> logits((size_t)R * NL), e(NL);
      std::vector<float> value_proj((size_t)R * M * A);  // values_i W_c[U:] of these rows
      if (A) gemm(R * M, L.values + (size_t)b0 * M * d.V, d.V, W_c_v, value_proj.data(), A, false);
      for (int j = 0; j < T; ++j) {
        for (int r = 0; r < R; ++r)
          for (int f = 0; f < F; ++f) {
            int id = static_ids[j * F + f];
            if (lags[f]) id += j >= lags[f] ? PIX[(size_t)(b0 + r) * T + j - lags[f]] : NL;
            ids[r * F + f] = id;
          }
        input_part(L, w, ids.data(), F);
        decode_step(L, W_c_h, value_proj.data(), w);
        gemm(R, w.s.data(), L.S, W_out, logits.data(), NL, false);  // eq. 5: [a_j or h_j] W_out
        for (int r = 0; r < R; r += pair) {
          const size_t at = (size_t)(b0 + r) * T + j;
          if (A)
            for (int q = 0; q < pair; ++q)
              std::memcpy(ALPHA + (at + (size_t)q * T) * M, &w.alpha[(r + q) * M],
                          M * sizeof(float));
          float* l = &logits[(size_t)r * NL];
          for (int k = 0; k < NL; ++k) l[k] += b_out[k];
          if (guided_) {
            const float* empty = &logits[(size_t)(r + 1) * NL];
            for (int k = 0; k < NL; ++k) {
              const float u = empty[k] + b_out[k];
              l[k] = u + guidance * (l[k] - u);
            }
          }
          const float top = max_of(l, NL);
          for (int k = 0; k < NL; ++k) e[k] = l[k] - top;
          exp_inplace(e.data(), NL);
          // The draw below walks the same sum one term at a time: it takes the total in that
          // order too, or the walk could end a few ulps short of it and fall to the last level.
          auto serial_sum = [&] {
            float sum = 0.f;
            for (int k = 0; k < NL; ++k) sum += e[k];
            return sum;
          };
          float total = mode_ == kSample ? serial_sum() : sum_of(e.data(), NL);
          const float log_total = std::log(total);
          int x = 0;
          if (mode_ == kScore) {
            x = targets[at];
          } else if (mode_ == kGreedy) {
            // The first of the largest, as argmax takes it (for finite logits).
            while (x < NL - 1 && l[x] != top) ++x;
          } else {
            if (temperature != 1.f) {
              for (int k = 0; k < NL; ++k) e[k] = (l[k] - top) / temperature;
              exp_inplace(e.data(), NL);
              total = serial_sum();
            }
            const float target = uniforms[at] * total;
            float sum = 0.f;
            x = NL - 1;  // rounding may leave the last cumulative sum a hair under the target
            for (int k = 0; k < NL; ++k) {
              sum += e[k];
              if (sum > target) {
                x = k;
                break;
              }
            }
          }
          for (int q = 0; q < pair; ++q) {
            PIX[at + (size_t)q * T] = x;
            LOGP[at + (size_t)q * T] = l[x] - top - log_total;
          }
        }
      }
    });
  }

 private:
  enum Mode { kScore, kGreedy, kSample };
  Mode mode_;
  bool guided_;
  int num_threads_;
};

REGISTER_OP("Text2pixelPixelLoopForward")
    .Input("tables: float")
    .Input("ids: int32")
    .Input("base: float")
    .Input("recurrent_kernel: float")
    .Input("keys: float")
    .Input("values: float")
    .Input("memory_mask: float")
    .Input("attention_kernel: float")
    .Attr("num_threads: int = 0")
    .Output("h: float")
    .Output("c: float")
    .Output("gates: float")
    .Output("alpha: float")
    .Output("context: float")
    .Output("attention: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      using tensorflow::shape_inference::DimensionHandle;
      auto tables = c->input(0), ids = c->input(1), keys = c->input(4), values = c->input(5),
           w_c = c->input(7);
      DimensionHandle B = c->Dim(ids, 0), T = c->Dim(ids, 1), G = c->Dim(tables, 1), U,
                      A = c->Dim(w_c, 1);
      TF_RETURN_IF_ERROR(c->Divide(G, 4, true, &U));
      c->set_output(0, c->MakeShape({B, T, U}));
      c->set_output(1, c->MakeShape({B, T, U}));
      c->set_output(2, c->MakeShape({B, T, G}));
      const bool no_attention = c->ValueKnown(A) && c->Value(A) == 0;
      c->set_output(3, c->MakeShape({B, T, no_attention ? c->MakeDim(0) : c->Dim(keys, 1)}));
      c->set_output(4, c->MakeShape({B, T, no_attention ? c->MakeDim(0) : c->Dim(values, 2)}));
      c->set_output(5, c->MakeShape({B, T, A}));
      return tensorflow::OkStatus();
    });

REGISTER_OP("Text2pixelPixelLoopBackward")
    .Input("tables: float")
    .Input("ids: int32")
    .Input("base: float")
    .Input("recurrent_kernel: float")
    .Input("keys: float")
    .Input("values: float")
    .Input("memory_mask: float")
    .Input("attention_kernel: float")
    .Input("h: float")
    .Input("c: float")
    .Input("gates: float")
    .Input("alpha: float")
    .Input("context: float")
    .Input("attention: float")
    .Input("grad_h: float")
    .Input("grad_attention: float")
    .Attr("num_threads: int = 0")
    .Output("grad_input_part: float")
    .Output("grad_tables: float")
    .Output("grad_base: float")
    .Output("grad_keys: float")
    .Output("grad_values: float")
    .Output("grad_attention_preactivation: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      auto ids = c->input(1), tables = c->input(0);
      c->set_output(0, c->MakeShape({c->Dim(ids, 0), c->Dim(ids, 1), c->Dim(tables, 1)}));
      c->set_output(1, c->input(0));
      c->set_output(2, c->input(2));
      c->set_output(3, c->input(4));
      c->set_output(4, c->input(5));
      c->set_output(5, c->input(13));
      return tensorflow::OkStatus();
    });

REGISTER_OP("Text2pixelPixelLoopDecode")
    .Input("tables: float")
    .Input("static_ids: int32")
    .Input("base: float")
    .Input("recurrent_kernel: float")
    .Input("keys: float")
    .Input("values: float")
    .Input("memory_mask: float")
    .Input("attention_kernel: float")
    .Input("lags: int32")
    .Input("output_kernel: float")
    .Input("output_bias: float")
    .Input("targets: int32")
    .Input("uniforms: float")
    .Input("temperature: float")
    .Input("guidance: float")
    .Attr("mode: {'score', 'greedy', 'sample'}")
    .Attr("guided: bool = false")
    .Attr("num_threads: int = 0")
    .Output("pixels: int32")
    .Output("log_prob: float")
    .Output("alpha: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      auto base = c->input(2), ids = c->input(1), keys = c->input(4), w_c = c->input(7);
      auto B = c->Dim(base, 0), T = c->Dim(ids, 0), A = c->Dim(w_c, 1);
      const bool no_attention = c->ValueKnown(A) && c->Value(A) == 0;
      c->set_output(0, c->MakeShape({B, T}));
      c->set_output(1, c->MakeShape({B, T}));
      c->set_output(2, c->MakeShape({B, T, no_attention ? c->MakeDim(0) : c->Dim(keys, 1)}));
      return tensorflow::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("Text2pixelPixelLoopDecode").Device(tensorflow::DEVICE_CPU),
                        PixelLoopDecodeOp);
REGISTER_KERNEL_BUILDER(Name("Text2pixelPixelLoopForward").Device(tensorflow::DEVICE_CPU),
                        PixelLoopForwardOp);
REGISTER_KERNEL_BUILDER(Name("Text2pixelPixelLoopBackward").Device(tensorflow::DEVICE_CPU),
                        PixelLoopBackwardOp);

}  // namespace text2pixel
