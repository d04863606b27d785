"""Shared by the benchmark scripts: the thread and --compare flags, a synthetic batch, timing, and
the two output lines."""

from __future__ import annotations

import importlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --intra_op_threads and --inter_op_threads are the binaries' own flags, imported for their
# definitions rather than defined again: absl refuses a flag name defined twice in one process.
importlib.import_module("text2pixel.binaries.common")

flags.DEFINE_boolean("tf_default_threads", False,
                     "leave TensorFlow's thread pools alone (the 'before' numbers)")
FLAGS = flags.FLAGS

# The shared flags a script lists in its --helpshort (flags.declare_key_flag each).
THREAD_FLAGS = ("intra_op_threads", "inter_op_threads", "tf_default_threads")
COMPARE_FLAGS = ("compare", "rounds")  # not --code_root: --compare sets it for its subprocesses


def define_compare_flags() -> None:
  """--compare and its companions, for a script that supports them (train_throughput.py)."""
  flags.DEFINE_string("compare", "", "a git revision: run this same benchmark on that commit's "
                      "code too, in this call, alternating, and print new/old ratios")
  flags.DEFINE_integer("rounds", 2, "with --compare: alternations")
  flags.DEFINE_string("code_root", REPO, "internal: the source tree to import (set by --compare)")


def use_code_root() -> None:
  """Makes ``import text2pixel`` load the tree at --code_root (a worktree of another commit)."""
  root = os.path.abspath(FLAGS.code_root)
  sys.path.insert(0, root)
  for name in [m for m in sys.modules if m.split(".")[0] in ("text2pixel", "datasets")]:
    del sys.modules[name]


def worktree(revision: str) -> str:
  """A detached git worktree of ``revision`` (created once, reused), for --compare."""
  commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", revision], check=True,
                          capture_output=True, text=True).stdout.strip()
  path = os.path.join(tempfile.gettempdir(), f"text2pixel_bench_{commit}")
  if not os.path.exists(os.path.join(path, "text2pixel")):
    subprocess.run(["git", "-C", REPO, "worktree", "add", "--force", "--detach", path, commit],
                    check=True, capture_output=True)
  return path


def commit_label(root: str = REPO) -> str:
  """The tree's short commit, with "+changes" if tracked files differ from it."""
  head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], check=True,
                        capture_output=True, text=True).stdout.strip()
  dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                         capture_output=True, text=True).stdout.strip()
  return head + ("+changes" if dirty else "")


def compare(script: str, argv, revision: str, rounds: int, key: str, higher_is_better: bool):
  """Runs ``script`` (with ``argv`` minus --compare) on this tree and on ``revision``'s tree,
  alternating for ``rounds`` rounds, and reports each benchmark line's new/old speed ratio."""
  old_root = worktree(revision)
  argv = list(argv)
  for i, arg in enumerate(argv):  # absl takes both --compare REV and --compare=REV
    if arg == "--compare":
      del argv[i:i + 2]
      break
    if arg.startswith("--compare="):
      del argv[i]
      break
  results = {"new": [], "old": []}
  for round_ in range(rounds):
    for label, root in (("old", old_root), ("new", REPO)):
      out = subprocess.run([sys.executable, script, *argv, "--code_root", root],
                           capture_output=True, text=True,
                           env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
      if out.returncode:
        sys.exit(f"{label} tree ({root}) failed:\n{out.stderr[-3000:]}")
      lines = [json.loads(l[6:]) for l in out.stdout.splitlines() if l.startswith("BENCH ")]
      print(f"round {round_ + 1}, {label}: " + "; ".join(f"{l[key]:.4g}" for l in lines),
            flush=True)
      results[label].append(lines)
  new_label = commit_label()
  for index, line in enumerate(results["new"][0]):
    new = float(np.median([r[index][key] for r in results["new"]]))
    old = float(np.median([r[index][key] for r in results["old"]]))
    ratio = new / old if higher_is_better else old / new
    what = {k: v for k, v in line.items() if k in ("preset", "method", "batch", "batch_size",
                                                   "mixed_precision", "captions", "images",
                                                   "threads")}
    report(os.path.basename(script)[:-3] + "_compare",
           f"{what}: {revision} {old:.4g} -> {new_label} {new:.4g} {key}: {ratio:.2f}x faster",
           old_revision=revision, new_revision=new_label, ratio=ratio, old=old, new=new,
           key=key, rounds=rounds, **what)


def apply_thread_flags() -> str:
  """Sets the thread pools as the binaries do; returns a label for the report."""
  if FLAGS.tf_default_threads:
    return "tf-default threads"
  from text2pixel.threads import configure_threads
  configure_threads(FLAGS.intra_op_threads, FLAGS.inter_op_threads)
  return f"threads {FLAGS.intra_op_threads}x{FLAGS.inter_op_threads or os.cpu_count()}"


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
