"""text2pixel-sample: captions -> PNG grids (caption under each row) and attention pictures.

  text2pixel-sample --run_dir workspace/runs/cpu_small \
      --captions "the digit 3 is on the left of the digit 5;the digit 7 is at the top left of the image"
  text2pixel-sample --saved_model workspace/exports/cpu_small --captions_file captions.txt

Works from a training run (latest checkpoint) or an exported SavedModel. --out_dir may be new,
empty, or hold only pictures this binary wrote (which are overwritten); anything else is refused.
"""

import os
import sys

import numpy as np
from absl import app, flags

from text2pixel import layout, text as text_lib
from text2pixel.binaries import common
from text2pixel.binaries.common import require, run_main
from text2pixel.errors import UsageError
from text2pixel.text import CaptionError

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
flags.DEFINE_float("guidance", None, "classifier-free guidance scale for sample and greedy (1 = "
                   "none; default the model's own, which an export fixes)")
flags.DEFINE_integer("scale", 4, "upscaling of the pictures for viewing")
flags.DEFINE_string("out_dir", "workspace/samples", "where the PNGs go")
flags.DEFINE_boolean("attention", True, "also write one attention picture per caption")
flags.DEFINE_boolean("judge", True, "print the digit judge's verdict on each sample of a caption "
                     "the MNIST-with-captions builder writes (32x32 models only)")

OUTPUTS = ("greedy_grid.png", "sample_grid.png", "beam_grid.png", "attention_*.png")


def read_captions():
  if bool(FLAGS.captions) == bool(FLAGS.captions_file):
    raise UsageError("give exactly one of --captions or --captions_file")
  if FLAGS.captions_file:
    try:
      with open(FLAGS.captions_file, "rb") as f:
        raw = f.read()
    except OSError as error:
      raise UsageError(f"--captions_file {FLAGS.captions_file}: {error.strerror}") from None
    try:
      text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
      raise CaptionError(f"--captions_file {FLAGS.captions_file} is not UTF-8 text (byte "
                         f"{error.start})") from None
    captions = [line.strip() for line in text.splitlines() if line.strip()]
  else:
    captions = [c.strip() for c in FLAGS.captions.split(";")]
  if not captions:
    raise UsageError("no captions given")
  return captions


def check_flags():
  common.exactly_one_model_source(FLAGS.run_dir, FLAGS.saved_model)
  captions = read_captions()
  config, vocab = layout.read_model_source(FLAGS.run_dir, FLAGS.saved_model)
  text_lib.encode_captions(vocab, captions, config.max_caption_len)  # unknown words, too long
  require(FLAGS.num_samples >= 1, "--num_samples must be >= 1")
  require(FLAGS.temperature > 0 or FLAGS.method != "sample",
          "--temperature must be > 0 (use --method greedy for the most likely pixels)")
  require(FLAGS.beam_width >= 1, "--beam_width must be >= 1")
  from text2pixel import generation
  generation.check_guidance(config, FLAGS.method, FLAGS.guidance,
                            exported=bool(FLAGS.saved_model))
  require(FLAGS.scale >= 1, "--scale must be >= 1")
  common.check_output_dir(FLAGS.out_dir, "--out_dir", "text2pixel-sample", OUTPUTS)


def main(argv):
  del argv
  from text2pixel import generation, pictures
  captions = read_captions()
  if FLAGS.saved_model:
    generator = generation.SavedModelGenerator(FLAGS.saved_model)
  else:
    generator = generation.CheckpointGenerator(FLAGS.run_dir, beam_width=FLAGS.beam_width)
  warn = lambda message: print(f"warning: {message}", file=sys.stderr)
  result = generator.generate(captions, FLAGS.method, num_samples=FLAGS.num_samples,
                              temperature=FLAGS.temperature, seed=FLAGS.seed, warn=warn,
                              guidance=FLAGS.guidance)
  common.check_output_dir(FLAGS.out_dir, "--out_dir", "text2pixel-sample", OUTPUTS)
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  label = {"sample": f"T={FLAGS.temperature}", "greedy": "greedy",
           "beam": "beams best first"}[FLAGS.method]
  guidance = generator.config.guidance if FLAGS.guidance is None else FLAGS.guidance
  if FLAGS.method != "beam" and guidance != 1.0:
    label += f", guidance {guidance:g}"
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
  from text2pixel import judge as judge_lib
  if FLAGS.judge and generator.config.image_side == judge_lib.SIDE:
    for line in judge_lib.verdict_report(captions, result["images"]):
      print(line)
  return 0


def run():
  app.run(lambda argv: run_main(main, argv, check_flags))


if __name__ == "__main__":
  run()
