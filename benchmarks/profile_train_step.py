"""Where a training step's time goes: TF profiler trace, summed by op type.

  .venv/bin/python benchmarks/profile_train_step.py --preset paper --steps 1
  .venv/bin/tensorboard --logdir workspace/profile     # the same trace, in the Profile tab
                                                       # (needs tensorboard-plugin-profile)

Runs the trainer's step (benchmarks/train_throughput.py) under `tf.profiler`, writes the trace to
--logdir for TensorBoard, and prints the op types that take the most CPU time (summed over both
cores' threads, so the total can exceed wall time).
"""

import collections
import glob
import gzip
import os
import sys
import tempfile

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks import common  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
  # Only when run as the program: the benchmarks share flag names (--preset, --repeats), one
  # imports another (profile_train_step.py: train_throughput.py), and absl refuses a name defined
  # twice in one process.
  flags.DEFINE_string("preset", "cpu_small", "config preset")
  flags.DEFINE_string("mixed_precision", "float32", "the config's mixed_precision")
  flags.DEFINE_boolean("jit_compile", False, "XLA-compile the step")
  flags.DEFINE_integer("steps", 1, "steps profiled")
  flags.DEFINE_integer("top", 15, "op types listed")
  flags.DEFINE_string("logdir", "workspace/profile", "where the trace goes (TensorBoard)")
  flags.DEFINE_string("pixel_loop", "", "fused | graph (default: the config's)")
  for name in common.THREAD_FLAGS:
    flags.declare_key_flag(name)


def op_type_totals(xplane_path: str):
  """{op type: (seconds, count)} over the host's TF op events of one .xplane.pb file."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2
  opener = gzip.open if xplane_path.endswith(".gz") else open
  space = xplane_pb2.XSpace()
  with opener(xplane_path, "rb") as f:
    space.ParseFromString(f.read())
  totals = collections.defaultdict(lambda: [0.0, 0])
  for plane in space.planes:
    if not plane.name.startswith("/host:CPU"):
      continue
    names = {k: m.name for k, m in plane.event_metadata.items()}
    for line in plane.lines:
      for event in line.events:
        name = names.get(event.metadata_id, "")
        # TF op events are named "op_name:OpType"; skip executor/function bookkeeping.
        if ":" not in name or "__inference" in name or "::" in name:
          continue
        op_type = name.rsplit(":", 1)[1]
        totals[op_type][0] += event.duration_ps * 1e-12
        totals[op_type][1] += 1
  return totals


def main(argv):
  del argv
  threads = common.apply_thread_flags()

  import time
  import tensorflow as tf
  from benchmarks import train_throughput
  data_dir = os.path.join(tempfile.gettempdir(), "text2pixel_bench_data")
  train_throughput.make_data(data_dir)
  overrides = dict(mixed_precision=FLAGS.mixed_precision, jit_compile=FLAGS.jit_compile,
                   eval_every=10 ** 6, sample_every=10 ** 6, checkpoint_every=10 ** 6)
  if FLAGS.pixel_loop:
    overrides["pixel_loop"] = FLAGS.pixel_loop
  config, step = train_throughput.make_step(FLAGS.preset, data_dir, **overrides)
  step()  # trace and warm up outside the profile
  step()
  logdir = os.path.join(FLAGS.logdir, f"{FLAGS.preset}_{FLAGS.mixed_precision}"
                        f"{'_xla' if FLAGS.jit_compile else ''}")
  tf.profiler.experimental.start(logdir)
  start = time.perf_counter()
  for _ in range(FLAGS.steps):
    step()
  wall = (time.perf_counter() - start) / FLAGS.steps
  tf.profiler.experimental.stop()
  paths = sorted(glob.glob(os.path.join(logdir, "plugins/profile/*/*.xplane.pb")))
  totals = op_type_totals(paths[-1])
  busy = sum(t for t, _ in totals.values()) / FLAGS.steps
  rows = sorted(totals.items(), key=lambda kv: -kv[1][0])[:FLAGS.top]
  print(f"{FLAGS.preset} {FLAGS.mixed_precision}{' xla' if FLAGS.jit_compile else ''}: "
        f"{threads}: {wall:.2f} s/step wall, {busy:.2f} s of op time per step; trace in {logdir}")
  print(f"{'op type':<28} {'s/step':>8} {'share':>6} {'calls/step':>11} {'us/call':>8}")
  for name, (seconds, count) in rows:
    seconds, count = seconds / FLAGS.steps, count / FLAGS.steps
    print(f"{name:<28} {seconds:8.3f} {seconds / busy:6.1%} {count:11.0f} "
          f"{seconds / max(count, 1) * 1e6:8.1f}")
  common.report("profile_train_step", f"{wall:.2f} s/step under the profiler",
                preset=FLAGS.preset, mixed_precision=FLAGS.mixed_precision,
                jit_compile=FLAGS.jit_compile, seconds_per_step=wall, threads=threads,
                top={name: round(seconds / FLAGS.steps, 4) for name, (seconds, _) in rows})


if __name__ == "__main__":
  define_flags()
  app.run(main)
