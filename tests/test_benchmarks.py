"""Each benchmark script runs (on the tiny preset) and prints its machine-readable line."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("script,args", [
    ("train_throughput.py", ["--repeats", "1", "--warmup", "1"]),
    ("sample_throughput.py", ["--batches", "1,2", "--repeats", "1", "--beam_width", "2"]),
    ("score_throughput.py", ["--captions", "2", "--images", "4", "--repeats", "1"]),
    ("decode_kernel.py", ["--batches", "3", "--threads", "1,2", "--repeats", "1"]),
    ("profile_train_step.py", ["--logdir", "{tmp}"]),
    ("startup_time.py", ["--rounds", "1"]),  # loads the shipped export
])
def test_benchmark_script_runs_on_tiny(script, args, tmp_path):
  args = [a.replace("{tmp}", str(tmp_path)) for a in args]
  result = subprocess.run([sys.executable, os.path.join("benchmarks", script), "--preset",
                           "tiny", *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-2000:]
  lines = [json.loads(l[6:]) for l in result.stdout.splitlines() if l.startswith("BENCH ")]
  assert lines and all(l["peak_rss_mib"] > 0 for l in lines)
  for line in lines:
    if script == "profile_train_step.py":  # the trace was read back: matmuls show up in it
      assert any("MatMul" in op for op in line["top"]), line["top"]
      continue
    if script == "startup_time.py":
      assert line["load_s"] > 0 and line["trace_greedy_s"] > 0
      continue
    rate = line.get("pixels_per_sec") or line.get("images_per_sec") or line.get("pairs_per_sec")
    assert rate > 0
