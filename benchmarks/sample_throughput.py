"""Sampling throughput: images/s for greedy, ancestral and beam search at several batch sizes.

  .venv/bin/python benchmarks/sample_throughput.py --preset paper --batches 1,16,64

Batch = captions per call; beam search returns beam_width images per caption but is counted per
caption (its useful output is the best beam).
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
  parser.add_argument("--batches", default="1,16,64")
  parser.add_argument("--methods", default="greedy,sample,beam")
  parser.add_argument("--beam_width", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=3)
  common.add_thread_flags(parser)
  args = parser.parse_args()
  threads = common.apply_thread_flags(args)

  import tensorflow as tf
  from text2pixel import config as config_lib, model as model_lib, sampling
  config = config_lib.get_preset(args.preset)
  model = model_lib.build(config, vocab_size=30)
  for method in args.methods.split(","):
    fn = sampling.make_generate_fn(model, method, num_samples=1, beam_width=args.beam_width)
    for batch in (int(b) for b in args.batches.split(",")):
      ids, lengths, _ = common.batch(config, batch)
      call = lambda: fn(tf.constant(ids), tf.constant(lengths), tf.constant(1.0),
                        tf.constant(0))["images"].numpy()
      seconds = common.timed(call, warmup=1, repeats=args.repeats)
      common.report("sample_throughput", f"{args.preset} {method} batch {batch}, {threads}: "
                    f"{seconds:.2f} s per call, {batch / seconds:.2f} images/s",
                    preset=args.preset, method=method, batch=batch,
                    beam_width=args.beam_width if method == "beam" else None,
                    seconds_per_call=seconds, images_per_sec=batch / seconds, threads=threads)


if __name__ == "__main__":
  main()
