"""Scoring throughput: (caption, image) pairs/s of exact log p(x|y), which bounds recall@K.

  .venv/bin/python benchmarks/score_throughput.py --preset cpu_small --captions 4 --images 64

The encoder runs once per caption; its annotations are repeated for every image in the block.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks import common  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="cpu_small")
  parser.add_argument("--captions", type=int, default=4)
  parser.add_argument("--images", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  common.add_thread_flags(parser)
  args = parser.parse_args()
  threads = common.apply_thread_flags(args)

  import tensorflow as tf
  from text2pixel import config as config_lib, model as model_lib
  config = config_lib.get_preset(args.preset)
  model = model_lib.build(config, vocab_size=30)
  ids, lengths, _ = common.batch(config, args.captions)
  _, _, images = common.batch(config, args.images, seed=1)
  score = tf.function(model.log_likelihood_matrix)
  call = lambda: score(tf.constant(ids), tf.constant(lengths), tf.constant(images)).numpy()
  seconds = common.timed(call, warmup=1, repeats=args.repeats)
  pairs = args.captions * args.images
  pool = 1000
  common.report("score_throughput", f"{args.preset} {args.captions} captions x {args.images} "
                f"images, {threads}: {pairs / seconds:,.0f} pairs/s (a 1000 x {pool} retrieval run: "
                f"{1000 * pool / (pairs / seconds) / 3600:.1f} h)",
                preset=args.preset, captions=args.captions, images=args.images,
                seconds_per_block=seconds, pairs_per_sec=pairs / seconds, threads=threads)


if __name__ == "__main__":
  main()
