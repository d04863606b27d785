"""Sampling throughput: images/s for greedy, ancestral and beam search at several batch sizes.

  .venv/bin/python benchmarks/sample_throughput.py --preset paper --batches 1,16,64 [--compare REV]

Batch = captions per call; beam search returns beam_width images per caption but is counted per
caption (its useful output is the best beam).
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
  flags.DEFINE_list("batches", ["1", "16", "64"], "captions per call")
  flags.DEFINE_list("methods", ["greedy", "sample", "beam"], "sampling methods")
  flags.DEFINE_integer("beam_width", 4, "beams per caption (method beam)")
  flags.DEFINE_integer("repeats", 3, "timed calls per point (the median is reported)")
  flags.DEFINE_enum("pixel_loop", None, ["fused", "graph"],
                    "override the preset's pixel_loop (fused: C++ decoder; graph: tfa / TF ops)")
  common.define_compare_flags()
  for name in common.THREAD_FLAGS + common.COMPARE_FLAGS:
    flags.declare_key_flag(name)


def main(argv):
  del argv
  if FLAGS.compare:
    return common.compare(__file__, sys.argv[1:], FLAGS.compare, FLAGS.rounds,
                          key="images_per_sec", higher_is_better=True)
  common.use_code_root()
  threads = common.apply_thread_flags()

  import tensorflow as tf
  from text2pixel import config as config_lib, model as model_lib, sampling
  config = config_lib.get_preset(FLAGS.preset)
  if FLAGS.pixel_loop:  # a field of every compared tree (older ones decoded with tfa regardless)
    config = config.replace(pixel_loop=FLAGS.pixel_loop)
  model = model_lib.build(config, vocab_size=30)
  for method in FLAGS.methods:
    fn = sampling.make_generate_fn(model, method, num_samples=1, beam_width=FLAGS.beam_width)
    for batch in (int(b) for b in FLAGS.batches):
      ids, lengths, _ = common.batch(config, batch)
      call = lambda: fn(tf.constant(ids), tf.constant(lengths), tf.constant(1.0),
                        tf.constant(0))["images"].numpy()
      seconds = common.timed(call, warmup=1, repeats=FLAGS.repeats)
      common.report("sample_throughput", f"{FLAGS.preset} {method} batch {batch}, {threads}: "
                    f"{seconds:.2f} s per call, {batch / seconds:.2f} images/s",
                    preset=FLAGS.preset, method=method, batch=batch,
                    beam_width=FLAGS.beam_width if method == "beam" else None,
                    seconds_per_call=seconds, images_per_sec=batch / seconds, threads=threads)


if __name__ == "__main__":
  define_flags()
  app.run(main)
