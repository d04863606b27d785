"""The fused decoder op alone: sequences/s and GFLOP/s at a preset's sizes, random weights.

  .venv/bin/python benchmarks/decode_kernel.py --preset cpu_small --batches 16,256 --threads 1,2
  perf record -o /tmp/decode.perf .venv/bin/python benchmarks/decode_kernel.py --batches 256 \
      --threads 1 && perf report -i /tmp/decode.perf --no-children --sort symbol

Times ``kernels.pixel_decode`` in score mode (teacher forcing: the same step work as sampling,
without the sampler's draw) with no model around it, so a profile of this process shows where the
op's own time goes. FLOPs count the recurrent matmul, the attention vector, the output layer and
eqs. 9 and 7 per image and pixel as the reference cell computes them (the op itself skips eq. 7's
context since 2026-11-28, so its GFLOP/s are reference-equivalent). `--compare REV` runs the
same on another commit's op in this call and prints the images/s ratios.
"""

import os
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks import common  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
  # Only when run as the program (the benchmarks share flag names; absl refuses duplicates).
  flags.DEFINE_string("preset", "cpu_small", "config preset whose sizes are used")
  flags.DEFINE_list("batches", ["16", "256"], "images per call")
  flags.DEFINE_list("threads", ["1", "2"], "the op's threads")
  flags.DEFINE_integer("repeats", 2, "timed calls (the mean is reported)")
  common.define_compare_flags()


def main(argv):
  del argv
  if FLAGS.compare:
    return common.compare(__file__, sys.argv[1:], FLAGS.compare, FLAGS.rounds,
                          key="images_per_sec", higher_is_better=True)
  common.use_code_root()
  from text2pixel.threads import configure_threads
  configure_threads(1, 0)
  import tensorflow as tf
  from text2pixel import config as config_lib, kernels
  c = config_lib.get_preset(FLAGS.preset)
  units, attention, dim, words = (c.decoder_units, c.attention_units, c.annotation_dim,
                                  c.max_caption_len)
  gates, steps, levels = 4 * units, c.num_pixels, c.num_levels
  rng = np.random.default_rng(0)
  normal = lambda *shape, scale=1.0: tf.constant(
      (rng.normal(size=shape) * scale).astype(np.float32))
  # Table rows as the real model's input tables have them (pixel, row, column, pixels above).
  rows = 257 * (1 + c.above_context) + 2 * c.image_side
  lags = [1] + [0, 0] + [c.image_side + c.above_context // 2 - i for i in range(c.above_context)]
  for batch in (int(b) for b in FLAGS.batches):
    args = dict(
        tables=normal(rows, gates, scale=0.1),
        static_ids=tf.zeros([steps, len(lags)], tf.int32), lags=tf.constant(lags, tf.int32),
        base=tf.zeros([batch, gates]), recurrent_kernel=normal(attention + units, gates,
                                                               scale=0.05),
        output_kernel=normal(attention, levels, scale=0.1), output_bias=tf.zeros([levels]),
        keys=normal(batch, words, units), values=normal(batch, words, dim),
        memory_mask=tf.ones([batch, words]),
        attention_kernel=normal(units + dim, attention, scale=0.05),
        targets=tf.constant(rng.integers(0, levels, (batch, steps)).astype(np.int32)))
    flop = batch * steps * 2 * ((attention + units) * gates + (units + dim) * attention +
                                attention * levels + words * (units + dim))
    for threads in (int(t) for t in FLAGS.threads):
      call = lambda: kernels.pixel_decode("score", num_threads=threads, **args)[1].numpy()
      call()
      start = time.perf_counter()
      for _ in range(FLAGS.repeats):
        call()
      seconds = (time.perf_counter() - start) / FLAGS.repeats
      common.report("decode_kernel", f"{FLAGS.preset} batch {batch}, {threads} thread(s): "
                    f"{seconds * 1000:.0f} ms, {batch / seconds:.0f} images/s, "
                    f"{flop / seconds / 1e9:.1f} GFLOP/s, "
                    f"{seconds / (batch / threads * steps) * 1e6:.1f} us per image-pixel "
                    "per thread", preset=FLAGS.preset, batch=batch, threads=threads,
                    seconds_per_call=seconds, images_per_sec=batch / seconds,
                    gflops=flop / seconds / 1e9)


if __name__ == "__main__":
  define_flags()
  app.run(main)
