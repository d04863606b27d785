"""Shared by the benchmark scripts: a synthetic batch, timing, and the two output lines."""

from __future__ import annotations

import json
import platform
import resource
import time

import numpy as np


def add_thread_flags(parser) -> None:
  parser.add_argument("--intra_op_threads", type=int, default=1)
  parser.add_argument("--inter_op_threads", type=int, default=0, help="0: one per CPU core")
  parser.add_argument("--tf_default_threads", action="store_true",
                      help="leave TensorFlow's thread pools alone (the 'before' numbers)")


def apply_thread_flags(args) -> str:
  """Sets the thread pools as the binaries do; returns a label for the report."""
  if args.tf_default_threads:
    return "tf-default threads"
  from text2pixel.binaries.common import configure_threads
  configure_threads(args.intra_op_threads, args.inter_op_threads)
  import os
  return f"threads {args.intra_op_threads}x{args.inter_op_threads or os.cpu_count()}"


def batch(config, batch_size: int, vocab_size: int = 30, seed: int = 0):
  """Random captions (real lengths, padded) and images at the config's sizes."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(max(2, config.max_caption_len // 2), config.max_caption_len + 1,
                         size=batch_size).astype(np.int32)
  ids = np.zeros((batch_size, config.max_caption_len), np.int32)
  for i, n in enumerate(lengths):
    ids[i, :n - 1] = rng.integers(3, vocab_size, size=n - 1)
    ids[i, n - 1] = 2
  images = rng.integers(0, 256, size=(batch_size, config.image_side, config.image_side),
                        dtype=np.uint8)
  return ids, lengths, images


def timed(fn, warmup: int, repeats: int) -> float:
  """Median seconds per call after warm-up (the first calls trace and compile)."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def report(name: str, human: str, **values) -> None:
  """One machine-readable JSON line (prefixed BENCH) and one line for people."""
  values = dict(benchmark=name, machine=platform.processor() or platform.machine(),
                peak_rss_mib=round(peak_rss_mib(), 1), **values)
  print("BENCH " + json.dumps(values, sort_keys=True))
  print(f"{name}: {human} (peak RSS {values['peak_rss_mib']:.0f} MiB)")


def cpu_peak_gflops() -> float:
  """fp32 peak of this machine's cores from /proc/cpuinfo: cores x GHz x FLOP/cycle.

  FLOP/cycle is 64 with AVX-512 (2 FMA units x 16 lanes x 2), 32 with AVX2 + FMA, else 16.
  """
  import os
  flags, mhz = "", 0.0
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags") and not flags:
          flags = line
        if line.startswith("cpu MHz") and not mhz:
          mhz = float(line.split(":")[1])
  except OSError:
    return float("nan")
  per_cycle = 64 if "avx512f" in flags else 32 if "fma" in flags else 16
  return os.cpu_count() * mhz / 1000.0 * per_cycle
