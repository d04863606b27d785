"""What this CPU can do at most: its fp32 FMA peak, and the fused ops' matrix block with weights
in L2 against weights streamed from L3.

  .venv/bin/python benchmarks/cpu_limits.py

The limits that issue 13's targets run into, measured rather than read from a data sheet: a
C++ program (compiled here with g++ -O3 -march=native) times
- the FMA peak: 12 independent chains of vector FMAs per core, on one core and on all;
- the register block of `text2pixel/kernels/pixel_loop.cc` (`panel_rows32` with AVX-512: 8 rows
  x 32 columns; `panel_rows<6, 16>` without it: 6 rows x 16 columns) over packed weights of 1 MB,
  which stay in a core's L2, and of 8.4 MB (paper's W_rec), which are streamed from L3 at every
  multiplication, as the paper decoder streams its weights at every pixel; both with one block of
  rows per pass over the weights (each thread its rows: what the decoder does at batch 16 on two
  threads, 8 rows each) and two (each thread its share of the columns for twice the rows).
Each block figure is the median of --repeats timings of about --seconds each; the FMA peak is
their best (the loop touches no memory, so other load on the machine can only lower it).
"""

import os
import statistics
import subprocess
import sys
import tempfile

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

FLAGS = flags.FLAGS

SOURCE = r"""
#include <immintrin.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#if defined(__AVX512F__)
typedef __m512 vec;
constexpr int kLanes = 16, kRows = 8;  // the kernel's AVX-512 block: 8 rows x 32 columns
static inline vec vload(const float* p) { return _mm512_loadu_ps(p); }
static inline void vstore(float* p, vec v) { _mm512_storeu_ps(p, v); }
static inline vec vset1(float x) { return _mm512_set1_ps(x); }
static inline vec vfma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
static inline float vsum(vec v) { return _mm512_reduce_add_ps(v); }
#else
typedef __m256 vec;
constexpr int kLanes = 8, kRows = 6;  // its AVX2 block: 6 rows x 16 columns (16 ymm registers)
static inline vec vload(const float* p) { return _mm256_loadu_ps(p); }
static inline void vstore(float* p, vec v) { _mm256_storeu_ps(p, v); }
static inline vec vset1(float x) { return _mm256_set1_ps(x); }
static inline vec vfma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
static inline float vsum(vec v) {
  float l[8];
  _mm256_storeu_ps(l, v);
  return l[0] + l[1] + l[2] + l[3] + l[4] + l[5] + l[6] + l[7];
}
#endif
constexpr int kWidth = 2 * kLanes;  // the kernel's widest panel

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

volatile float sink;  // keeps results alive without printing anything

// 12 independent FMA chains (enough to cover two units' latency; 14 registers with the two
// constants, so none spills even with AVX2's 16): the FMA units' throughput.
static double fma_peak(double seconds) {
  vec a0 = vset1(0.1f), a1 = vset1(0.2f), a2 = vset1(0.3f), a3 = vset1(0.4f), a4 = vset1(0.5f),
      a5 = vset1(0.6f), a6 = vset1(0.7f), a7 = vset1(0.8f), a8 = vset1(0.9f), a9 = vset1(1.0f),
      a10 = vset1(1.1f), a11 = vset1(1.2f);
  const vec m = vset1(0.999999f), c = vset1(1e-7f);
  long iterations = 0;
  const double start = now();
  double elapsed = 0;
  do {
    for (int i = 0; i < 1000000; ++i) {
      a0 = vfma(a0, m, c); a1 = vfma(a1, m, c); a2 = vfma(a2, m, c); a3 = vfma(a3, m, c);
      a4 = vfma(a4, m, c); a5 = vfma(a5, m, c); a6 = vfma(a6, m, c); a7 = vfma(a7, m, c);
      a8 = vfma(a8, m, c); a9 = vfma(a9, m, c); a10 = vfma(a10, m, c); a11 = vfma(a11, m, c);
    }
    iterations += 1000000;
    elapsed = now() - start;
  } while (elapsed < seconds);
  sink = vsum(a0) + vsum(a1) + vsum(a2) + vsum(a3) + vsum(a4) + vsum(a5) + vsum(a6) + vsum(a7) +
         vsum(a8) + vsum(a9) + vsum(a10) + vsum(a11);
  return iterations * 12.0 * kLanes * 2 / elapsed / 1e9;
}

// The kernel's block: kRows rows x kWidth columns of C in registers, one panel row per k.
__attribute__((noinline)) static void block(const float* A, int lda, const float* panel, int K,
                                            float* C, int ldc) {
  vec acc[kRows][2];
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < 2; ++v) acc[r][v] = vload(C + r * ldc + kLanes * v);
  for (int k = 0; k < K; ++k, panel += kWidth) {
    const vec b0 = vload(panel), b1 = vload(panel + kLanes);
    for (int r = 0; r < kRows; ++r) {
      const vec a = vset1(A[r * lda + k]);
      acc[r][0] = vfma(a, b0, acc[r][0]);
      acc[r][1] = vfma(a, b1, acc[r][1]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < 2; ++v) vstore(C + r * ldc + kLanes * v, acc[r][v]);
}

// C[rows, columns] += A[rows, K] B[K, columns] over B's packed panels [c0, c1), repeated for
// `seconds`; returns GFLOP/s.
static double gemm_rate(const std::vector<float>& B, int K, int rows, int c0, int c1,
                        double seconds) {
  std::vector<float> A((size_t)rows * K, 0.5f), C((size_t)rows * (c1 - c0), 0.f);
  long passes = 0;
  const double start = now();
  double elapsed = 0;
  do {
    for (int n = c0; n < c1; n += kWidth)
      for (int r = 0; r < rows; r += kRows)  // every block of rows reuses the panel
        block(A.data() + (size_t)r * K, K, B.data() + (size_t)n * K, K,
              C.data() + (size_t)r * (c1 - c0) + (n - c0), c1 - c0);
    ++passes;
    elapsed = now() - start;
  } while (elapsed < seconds);
  sink = C[0];
  return passes * 2.0 * rows * K * (c1 - c0) / elapsed / 1e9;
}

int main(int argc, char** argv) {
  const double seconds = std::atof(argv[1]);
  const int threads = std::atoi(argv[2]);
  std::printf("rows %d\n", kRows);
  std::printf("fma 1 %.2f\n", fma_peak(seconds));
  if (threads > 1) {
    std::vector<double> rate(threads);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) pool.emplace_back([&, t] { rate[t] = fma_peak(seconds); });
    for (auto& th : pool) th.join();
    double total = 0;
    for (double r : rate) total += r;
    std::printf("fma %d %.2f\n", threads, total);
  }
  // name, K, N: 1 MB (in L2), paper's W_rec [1024, 2048] (8.4 MB, streamed)
  const struct { const char* name; int K, N; } shapes[] = {{"l2", 256, 1024},
                                                           {"stream", 1024, 2048}};
  for (const auto& s : shapes) {
    std::vector<float> B((size_t)s.K * s.N, 0.001f);
    // rows split: every thread all columns for its kRows rows; units split: twice the rows, its
    // share of the columns (whole panels).
    const int per = s.N / threads / kWidth * kWidth;
    for (const int by_units : {0, 1}) {
      if (by_units && (threads < 2 || per == 0)) continue;
      std::vector<double> rate(threads);
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
          rate[t] = by_units ? gemm_rate(B, s.K, 2 * kRows, t * per, (t + 1) * per, seconds)
                             : gemm_rate(B, s.K, kRows, 0, s.N, seconds);
        });
      for (auto& th : pool) th.join();
      double total = 0;
      for (double r : rate) total += r;
      std::printf("block %s %d %d %.2f %.3f\n", s.name, by_units, threads, total,
                  s.K * (double)s.N * 4 / 1e6);
      if (threads > 1 && !by_units) {
        std::printf("block %s %d 1 %.2f %.3f\n", s.name, by_units,
                    gemm_rate(B, s.K, kRows, 0, s.N, seconds), s.K * (double)s.N * 4 / 1e6);
      }
    }
  }
}
"""


def define_flags():
  flags.DEFINE_float("seconds", 1.0, "length of each timing")
  flags.DEFINE_integer("repeats", 5, "timings per figure (the median is reported)")
  flags.DEFINE_integer("threads", os.cpu_count() or 1, "threads for the all-cores figures")


def build(directory: str) -> str:
  source, binary = os.path.join(directory, "cpu_limits.cc"), os.path.join(directory, "cpu_limits")
  with open(source, "w") as f:
    f.write(SOURCE)
  subprocess.run(["g++", "-O3", "-march=native", "-pthread", source, "-o", binary], check=True)
  return binary


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as directory:
    binary = build(directory)
    runs = [subprocess.run([binary, str(FLAGS.seconds), str(FLAGS.threads)], check=True,
                           capture_output=True, text=True).stdout.split("\n")
            for _ in range(FLAGS.repeats)]
  figures, block_rows, weights_mb = {}, 8, {}
  for lines in runs:
    for words in (line.split() for line in lines if line.strip()):
      if words[0] == "rows":
        block_rows = int(words[1])
        continue
      if words[0] == "block":  # block NAME SPLIT THREADS GFLOPS MB
        weights_mb[words[1]] = float(words.pop())
      *key, value = words
      figures.setdefault(tuple(key), []).append(float(value))
  median = statistics.median
  for key, values in figures.items():
    if key[0] == "fma":
      threads = int(key[1])
      common.report("cpu_limits", f"FMA peak, {threads} core(s): {max(values):.1f} GFLOP/s",
                    what="fma_peak", threads=threads, gflops=max(values))
    else:
      shape, by_units, threads = key[1], key[2] == "1", int(key[3])
      rows = 2 * block_rows if by_units else block_rows
      gflops = median(values)
      # Weights read per FLOP: each weight serves `rows` rows (2 FLOP each) per pass.
      gb_per_s = gflops / (2 * rows) * 4
      common.report(
          "cpu_limits",
          f"{block_rows}-row block, {weights_mb[shape]:.1f} MB of weights "
          f"({'in L2' if shape == 'l2' else 'streamed from L3'}), {threads} thread(s), "
          f"{rows} rows per pass ({'units split' if by_units else 'rows split'}): "
          f"{gflops:.1f} GFLOP/s, weights read at {gb_per_s:.1f} GB/s",
          what="block", weights_mb=weights_mb[shape], threads=threads, rows_per_pass=rows,
          split="units" if by_units else "rows", gflops=gflops, weight_gb_per_s=gb_per_s)


if __name__ == "__main__":
  define_flags()
  app.run(main)
