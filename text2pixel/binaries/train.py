"""text2pixel-train: trains alignPixelRNN on a built data set; restart it to resume.

  text2pixel-train --preset cpu_small --data_dir workspace/data/mnist_captions \
      --run_dir workspace/runs/cpu_small [--train_steps 3000] [--strategy mirrored]

Any Config field can be overridden by a flag of its name (see text2pixel/config.py). A restart
must give the same --preset and field flags as the start (only how long and how often may
change: config.RESUMABLE_CHANGES); otherwise it stops and names the fields that differ.
"""

import os

from absl import app, flags

from text2pixel import config as config_lib, layout
from text2pixel.binaries.common import require, run_main

FLAGS = flags.FLAGS
config_lib.define_flags()
flags.DEFINE_string("data_dir", "workspace/data/mnist_captions", "built data set (TFRecords)")
flags.DEFINE_string("run_dir", "workspace/runs/cpu_small", "checkpoints, config and summaries")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                  "tf.distribute strategy: one device, all local GPUs, or TF_CONFIG's cluster")
flags.DEFINE_float("collective_timeout_s", 120.0,
                   "multi_worker: seconds a worker waits for the others before failing")
flags.DEFINE_string("init_from", "",
                    "a new run starts from this run's latest weights (e.g. pretrained/"
                    "cpu_small_in_progress) with a fresh optimizer; use with --warmup_steps. "
                    "A wider --decoder_units / --attention_units / --encoder_units than the "
                    "source's widens its model, keeping what it computes")


def check_flags():
  """What can be checked before TensorFlow starts: the config, the run directory (new, or this
  same run restarted), the data set's files and the cluster description."""
  requested = config_lib.config_from_flags(FLAGS)
  require(not FLAGS.init_from or os.path.isfile(os.path.join(FLAGS.init_from, "config.json")),
          f"--init_from {FLAGS.init_from} is not a training run (no config.json)")
  require(FLAGS.collective_timeout_s > 0, "--collective_timeout_s must be > 0")
  require(FLAGS.strategy != "multi_worker" or "TF_CONFIG" in os.environ,
          "--strategy=multi_worker needs TF_CONFIG describing the cluster")
  layout.check_run_dir(FLAGS.run_dir)
  layout.resolve_run_config(FLAGS.run_dir, requested, config_lib.overrides_from_flags(FLAGS),
                            FLAGS.preset)
  layout.check_run_vocabulary(FLAGS.run_dir, layout.load_vocabulary(FLAGS.data_dir),
                              FLAGS.data_dir)
  for split in ("train", "validation"):
    layout.split_files(FLAGS.data_dir, split)


def main(argv):
  del argv
  from text2pixel import training
  config = layout.resolve_run_config(FLAGS.run_dir, config_lib.config_from_flags(FLAGS),
                                     config_lib.overrides_from_flags(FLAGS), FLAGS.preset)
  trainer = training.Trainer(config, FLAGS.data_dir, FLAGS.run_dir, FLAGS.strategy,
                             collective_timeout_s=FLAGS.collective_timeout_s,
                             preset=FLAGS.preset, init_from=FLAGS.init_from or None)
  trainer.train()
  return 0


def run():
  app.run(lambda argv: run_main(main, argv, check_flags))


if __name__ == "__main__":
  run()
