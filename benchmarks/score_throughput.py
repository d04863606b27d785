"""Scoring throughput: (caption, image) pairs/s of exact log p(x|y), which bounds recall@K.

  .venv/bin/python benchmarks/score_throughput.py --preset cpu_small --captions 4 --images 64 \
      [--compare REV]

The encoder runs once per caption; its annotations are repeated for every image in the block.
"""

import os
import sys

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
  flags.DEFINE_integer("captions", 4, "captions per block")
  flags.DEFINE_integer("images", 64, "images each caption is scored against")
  flags.DEFINE_integer("repeats", 3, "timed calls (the median is reported)")
  flags.DEFINE_enum("pixel_loop", None, ["fused", "graph"],
                    "override the preset's pixel_loop (fused: C++ decoder; graph: tfa / TF ops)")
  common.define_compare_flags()
  for name in common.THREAD_FLAGS + common.COMPARE_FLAGS:
    flags.declare_key_flag(name)


def main(argv):
  del argv
  if FLAGS.compare:
    return common.compare(__file__, sys.argv[1:], FLAGS.compare, FLAGS.rounds,
                          key="pairs_per_sec", higher_is_better=True)
  common.use_code_root()
  threads = common.apply_thread_flags()

  import tensorflow as tf
  from text2pixel import config as config_lib, model as model_lib
  config = config_lib.get_preset(FLAGS.preset)
  if FLAGS.pixel_loop:  # a field of every compared tree (older ones decoded with tfa regardless)
    config = config.replace(pixel_loop=FLAGS.pixel_loop)
  model = model_lib.build(config, vocab_size=30)
  ids, lengths, _ = common.batch(config, FLAGS.captions)
  _, _, images = common.batch(config, FLAGS.images, seed=1)
  score = tf.function(model.log_likelihood_matrix)
  call = lambda: score(tf.constant(ids), tf.constant(lengths), tf.constant(images)).numpy()
  seconds = common.timed(call, warmup=1, repeats=FLAGS.repeats)
  pairs = FLAGS.captions * FLAGS.images
  pool = 1000
  common.report("score_throughput", f"{FLAGS.preset} {FLAGS.captions} captions x {FLAGS.images} "
                f"images, {threads}: {pairs / seconds:,.0f} pairs/s (a 1000 x {pool} retrieval run: "
                f"{1000 * pool / (pairs / seconds) / 3600:.1f} h)",
                preset=FLAGS.preset, captions=FLAGS.captions, images=FLAGS.images,
                seconds_per_block=seconds, pairs_per_sec=pairs / seconds, threads=threads)


if __name__ == "__main__":
  define_flags()
  app.run(main)
