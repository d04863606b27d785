"""Copies a training run's latest weights, without optimizer state, into a small run folder.

  .venv/bin/python experiments/snapshot_weights.py --run_dir workspace/runs/long_cpu_small \
      --out_dir pretrained/long_cpu_small

Why: runs live in git-ignored workspace/, and a session's machine is not kept, so a training run
that needs more hours than one session has can only be carried on through the repository. The
folder written is itself a run directory (config.json, vocab.json, checkpoints/ with the model's
weights only, train_result.json and the learning curve if the run has them), so every binary takes
it as ``--run_dir`` (sample, evaluate, export, demo), and ``text2pixel-train --init_from`` starts a
new run from its weights (with ``--warmup_steps``: the new RMSProp's slots start at zero).
"""

import os
import shutil
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FLAGS = flags.FLAGS


def define_flags():
  # Only when run as the program: the experiments share flag names (--data_dir, --run_dir, ...),
  # tests and other experiments import their modules, and absl refuses a name defined twice.
  flags.DEFINE_string("run_dir", None, "a training run", required=True)
  flags.DEFINE_string("out_dir", None, "the small run folder to write", required=True)


def main(argv):
  del argv

  import tensorflow as tf
  from text2pixel import training
  config, vocab, model = training.load_run(FLAGS.run_dir)
  latest = tf.train.latest_checkpoint(os.path.join(FLAGS.run_dir, "checkpoints"))
  step, seconds = tf.Variable(0, dtype=tf.int64), tf.Variable(0.0, dtype=tf.float64)
  tf.train.Checkpoint(step=step, train_seconds=seconds).restore(latest).expect_partial()
  if os.path.exists(FLAGS.out_dir):
    shutil.rmtree(os.path.join(FLAGS.out_dir, "checkpoints"), ignore_errors=True)
  os.makedirs(os.path.join(FLAGS.out_dir, "checkpoints"), exist_ok=True)
  checkpoint = tf.train.Checkpoint(model=model, step=step, train_seconds=seconds)
  manager = tf.train.CheckpointManager(checkpoint, os.path.join(FLAGS.out_dir, "checkpoints"), 1)
  path = manager.save(checkpoint_number=int(step.numpy()))
  # run.json: the preset and where the run started from (experiments/lineage_curve.py)
  for name in ("config.json", "vocab.json", "run.json", "train_result.json", "learning_curve.json",
               "learning_curve.png"):
    if os.path.exists(os.path.join(FLAGS.run_dir, name)):
      shutil.copy(os.path.join(FLAGS.run_dir, name), os.path.join(FLAGS.out_dir, name))
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(FLAGS.out_dir)
             for f in files)
  print(f"{path}: step {int(step.numpy())}, {float(seconds.numpy()) / 3600:.2f} h of training; "
        f"{FLAGS.out_dir} holds {size / 2 ** 20:.1f} MiB")


if __name__ == "__main__":
  define_flags()
  app.run(main)
