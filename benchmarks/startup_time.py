"""Start-up costs paid before the first image: loading an export, and tracing a sampler.

  .venv/bin/python benchmarks/startup_time.py --saved_model pretrained/cpu_small \
      --compare_protobuf 3.20.3 --rounds 3
  .venv/bin/python benchmarks/startup_time.py --compare REV --rounds 3   # this tree vs REV's

Each measurement runs in a fresh process (TensorFlow caches what it traced): seconds to import
TensorFlow, to load the SavedModel (tf.saved_model.load), for its first greedy call, and to trace
and run a greedy sampler of a fresh --preset model. Both loading and tracing pass every function
through Python protobuf messages, so the protobuf implementation decides much of it:
--compare_protobuf VERSION installs that protobuf release beside (pip --target, once, under
workspace/bench_envs/) and alternates processes with it and with the installed one, in this call,
reporting the ratio for each measurement. --compare REV runs the same measurements on REV's code
(a git worktree), alternating, and reports the ratio of the sampler's trace time.
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks import common  # noqa: E402

FLAGS = flags.FLAGS
MEASURES = ("import_s", "load_s", "first_greedy_s", "trace_greedy_s")


def define_flags():
  flags.DEFINE_string("saved_model", "pretrained/cpu_small", "the export to load")
  flags.DEFINE_string("preset", "cpu_small", "the model whose greedy sampler is traced")
  flags.DEFINE_string("compare_protobuf", "", "a protobuf version to compare the installed one "
                      "with (e.g. 3.20.3); empty: measure the installed one only")
  flags.DEFINE_boolean("child", False, "internal: measure once in this process")
  common.define_compare_flags()  # --compare REV, --rounds (also the protobuf comparison's)
  for name in common.THREAD_FLAGS + common.COMPARE_FLAGS:
    flags.declare_key_flag(name)


def measure_once():
  """One fresh process's numbers: one BENCH line."""
  common.use_code_root()
  started = time.perf_counter()
  import tensorflow as tf
  from google.protobuf.internal import api_implementation
  import google.protobuf
  imported = time.perf_counter()
  common.apply_thread_flags()
  module = tf.saved_model.load(FLAGS.saved_model)
  loaded = time.perf_counter()
  module.signatures["greedy"](captions=tf.constant(["the digit 3 is on the left of the digit 5"]))
  first_call = time.perf_counter()
  from text2pixel import config as config_lib, model as model_lib, sampling
  config = config_lib.get_preset(FLAGS.preset)
  model = model_lib.build(config, vocab_size=30)
  ids, lengths, _ = common.batch(config, 1)
  traced_from = time.perf_counter()
  sampling.make_generate_fn(model, "greedy")(tf.constant(ids), tf.constant(lengths),
                                             tf.constant(1.0), tf.constant(0))
  traced = time.perf_counter()
  common.report("startup_time", f"protobuf {google.protobuf.__version__}: import "
                f"{imported - started:.1f} s, load {loaded - imported:.1f} s",
                protobuf=google.protobuf.__version__, protobuf_impl=api_implementation.Type(),
                import_s=imported - started, load_s=loaded - imported,
                first_greedy_s=first_call - loaded, trace_greedy_s=traced - traced_from,
                saved_model=FLAGS.saved_model, preset=FLAGS.preset)


def protobuf_target(version: str) -> str:
  """A folder holding protobuf ``version`` alone, put first on PYTHONPATH to use it."""
  target = os.path.join(common.REPO, "workspace", "bench_envs", f"protobuf-{version}")
  if not os.path.exists(os.path.join(target, "google", "protobuf")):
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    target, f"protobuf=={version}"], check=True)
  return target


def main(argv):
  if FLAGS.child:
    measure_once()
    return
  if FLAGS.compare:
    common.compare(os.path.abspath(__file__), argv[1:] + ["--child"], FLAGS.compare,
                   FLAGS.rounds, "trace_greedy_s", higher_is_better=False)
    return
  passed = [f"--saved_model={FLAGS.saved_model}", f"--preset={FLAGS.preset}",
            f"--intra_op_threads={FLAGS.intra_op_threads}",
            f"--inter_op_threads={FLAGS.inter_op_threads}",
            f"--tf_default_threads={FLAGS.tf_default_threads}"]
  envs = {"installed": dict(os.environ)}
  if FLAGS.compare_protobuf:
    target = protobuf_target(FLAGS.compare_protobuf)
    envs[FLAGS.compare_protobuf] = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [target] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
  results = {label: [] for label in envs}
  for round_ in range(FLAGS.rounds):
    for label, env in envs.items():
      out = subprocess.run([sys.executable, os.path.abspath(__file__), *passed, "--child"],
                           capture_output=True, text=True, env=env, cwd=common.REPO)
      if out.returncode:
        sys.exit(f"{label} failed:\n{out.stderr[-3000:]}")
      line = next(json.loads(l[6:]) for l in out.stdout.splitlines() if l.startswith("BENCH "))
      results[label].append(line)
      print(f"round {round_ + 1}, protobuf {line['protobuf']} ({line['protobuf_impl']}): " +
            ", ".join(f"{k} {line[k]:.1f}" for k in MEASURES), flush=True)
  import numpy as np
  medians = {label: {k: float(np.median([r[k] for r in rows])) for k in MEASURES}
             for label, rows in results.items()}
  for label, rows in results.items():
    common.report("startup_time_median", f"protobuf {rows[0]['protobuf']} "
                  f"({rows[0]['protobuf_impl']}), median of {len(rows)}: " +
                  ", ".join(f"{k} {medians[label][k]:.1f}" for k in MEASURES),
                  protobuf=rows[0]["protobuf"], protobuf_impl=rows[0]["protobuf_impl"],
                  rounds=len(rows), saved_model=FLAGS.saved_model, preset=FLAGS.preset,
                  **medians[label])
  if FLAGS.compare_protobuf:
    old, new = medians[FLAGS.compare_protobuf], medians["installed"]
    ratios = {k: old[k] / new[k] for k in MEASURES}
    common.report("startup_time_compare", f"protobuf {FLAGS.compare_protobuf} -> installed: " +
                  ", ".join(f"{k} {r:.2f}x faster" for k, r in ratios.items()),
                  old_protobuf=FLAGS.compare_protobuf,
                  new_protobuf=results["installed"][0]["protobuf"],
                  **{f"ratio_{k}": r for k, r in ratios.items()})


if __name__ == "__main__":
  define_flags()
  app.run(main)
