"""text2pixel-sample: captions -> PNG grids (caption under each row) and attention pictures.

  text2pixel-sample --run_dir workspace/runs/cpu_small \
      --captions "the digit 3 is on the left of the digit 5;the digit 7 is at the top left of the image"
  text2pixel-sample --saved_model workspace/exports/cpu_small --captions_file captions.txt

Works from a training run (latest checkpoint) or an exported SavedModel.
"""

import os
import sys

import numpy as np
from absl import app, flags

from text2pixel.binaries.common import run_main

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", "", "training run to sample from (its latest checkpoint)")
flags.DEFINE_string("saved_model", "", "or: an exported SavedModel directory")
flags.DEFINE_string("captions", "", "captions separated by ';'")
flags.DEFINE_string("captions_file", "", "or: a UTF-8 text file with one caption per line")
flags.DEFINE_enum("method", "sample", ["greedy", "sample", "beam"], "how to generate")
flags.DEFINE_integer("num_samples", 8, "images per caption (ancestral sampling)")
flags.DEFINE_float("temperature", 1.0, "softmax temperature for ancestral sampling")
flags.DEFINE_integer("beam_width", 4, "beams per caption (--method beam; a SavedModel has its own)")
flags.DEFINE_integer("seed", 0, "sampling seed: the same seed gives the same images")
flags.DEFINE_integer("scale", 4, "upscaling of the pictures for viewing")
flags.DEFINE_string("out_dir", "workspace/samples", "where the PNGs go")
flags.DEFINE_boolean("attention", True, "also write one attention picture per caption")


def read_captions():
  if bool(FLAGS.captions) == bool(FLAGS.captions_file):
    raise ValueError("give exactly one of --captions or --captions_file")
  if FLAGS.captions_file:
    with open(FLAGS.captions_file, "rb") as f:
      raw = f.read()
    try:
      text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
      raise ValueError(f"{FLAGS.captions_file} is not UTF-8 text (byte {error.start})") from None
    captions = [line.strip() for line in text.splitlines() if line.strip()]
  else:
    captions = [c.strip() for c in FLAGS.captions.split(";")]
  if not captions:
    raise ValueError("no captions given")
  return captions


def main(argv):
  del argv
  if bool(FLAGS.run_dir) == bool(FLAGS.saved_model):
    raise ValueError("give exactly one of --run_dir or --saved_model")
  from text2pixel import generation, pictures
  captions = read_captions()
  generator = generation.Generator.open(FLAGS.run_dir or FLAGS.saved_model,
                                        beam_width=FLAGS.beam_width)
  warn = lambda message: print(f"warning: {message}", file=sys.stderr)
  result = generator.generate(captions, FLAGS.method, num_samples=FLAGS.num_samples,
                              temperature=FLAGS.temperature, seed=FLAGS.seed, warn=warn)
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  label = {"sample": f"T={FLAGS.temperature}", "greedy": "greedy",
           "beam": "beams best first"}[FLAGS.method]
  grid = pictures.caption_grid(
      result["images"], [f"{c}  [{label}; mean log p {np.mean(lp):.1f} nats]"
                         for c, lp in zip(captions, result["log_prob"])], scale=FLAGS.scale)
  grid_path = pictures.save(grid, os.path.join(FLAGS.out_dir, f"{FLAGS.method}_grid.png"))
  print(f"wrote {grid_path}")
  if FLAGS.attention and generator.attends:
    for i, caption in enumerate(captions):
      words = result["words"][i]
      picture = pictures.attention_picture(result["images"][i, 0],
                                           result["attention"][i, 0][:, :len(words)], words,
                                           caption, scale=FLAGS.scale)
      path = pictures.save(picture, os.path.join(FLAGS.out_dir, f"attention_{i:03d}.png"))
      print(f"wrote {path}")
  return 0


def run():
  app.run(lambda argv: run_main(main, argv))


if __name__ == "__main__":
  run()
