"""text2pixel-evaluate: the paper's Table 1/2 figures for a trained run or an exported model.

  text2pixel-evaluate --run_dir workspace/runs/cpu_small --data_dir workspace/data/mnist_captions \
      --out_dir workspace/eval/cpu_small --num_captions 1000 --pool 1000 --ssim_samples 50

Writes results.json (every figure), results.md (a table in the paper's layout, and the settings),
samples.png, and the retrieval score matrices, which let an interrupted run resume. --out_dir
may be new, empty, or hold only files an evaluation writes; anything else is refused.
"""

from absl import app, flags

from text2pixel import layout
from text2pixel.binaries import common
from text2pixel.binaries.common import require, run_main

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", "", "training run to evaluate (latest checkpoint)")
flags.DEFINE_string("saved_model", "", "or: an exported SavedModel")
flags.DEFINE_string("data_dir", "workspace/data/mnist_captions", "built data set (test split)")
flags.DEFINE_string("out_dir", "workspace/eval/cpu_small", "where results go")
flags.DEFINE_integer("num_captions", 1000, "retrieval: test captions (one per image)")
flags.DEFINE_integer("pool", 1000, "retrieval: test images each caption ranks (its own included)")
flags.DEFINE_integer("ssim_captions", 100, "SSIM: test captions")
flags.DEFINE_integer("ssim_samples", 50, "SSIM: samples per caption (the paper: 50)")
flags.DEFINE_float("temperature", 1.0, "sampling temperature for SSIM and the judge")
flags.DEFINE_integer("seed", 0, "sampling seed")
flags.DEFINE_integer("pairs_per_batch", 256, "(caption, image) pairs scored per step")
flags.DEFINE_integer("sample_batch", 8, "captions sampled per step")
flags.DEFINE_integer("bpd_examples", 0, "test pairs for bits/dim (0 = the retrieval/SSIM need)")
flags.DEFINE_string("judge_cache", "workspace/judge", "the digit judge's cache (trained once)")
flags.DEFINE_string("model_name", "alignPixelRNN", "the row name in the table")


# What an evaluation writes (evaluation.evaluate), and the training summary that
# experiments/runner.py keeps beside it.
OUTPUTS = ("results.json", "results.md", "ranks.json", "samples.png", "ssim_samples.npy",
           "scores_*.npz", "train_result.json")


def check_flags():
  common.exactly_one_model_source(FLAGS.run_dir, FLAGS.saved_model)
  for name in ("num_captions", "pool", "ssim_captions", "ssim_samples", "pairs_per_batch",
               "sample_batch"):
    require(getattr(FLAGS, name) >= 1, f"--{name} must be >= 1")
  require(FLAGS.bpd_examples >= 0, "--bpd_examples must be >= 0")
  require(FLAGS.temperature > 0, "--temperature must be > 0")
  common.check_output_dir(FLAGS.out_dir, "--out_dir", "text2pixel-evaluate", OUTPUTS)
  _, vocab = layout.read_model_source(FLAGS.run_dir, FLAGS.saved_model)
  layout.read_metadata(FLAGS.data_dir)
  layout.check_model_vocabulary(vocab, FLAGS.data_dir)
  layout.split_files(FLAGS.data_dir, "test")


def main(argv):
  del argv
  from text2pixel import evaluation, generation
  if FLAGS.saved_model:
    generator = generation.SavedModelGenerator(FLAGS.saved_model)
  else:
    generator = generation.CheckpointGenerator(FLAGS.run_dir)
  results = evaluation.evaluate(
      generator, FLAGS.data_dir, FLAGS.out_dir, num_captions=FLAGS.num_captions, pool=FLAGS.pool,
      ssim_captions=FLAGS.ssim_captions, ssim_samples=FLAGS.ssim_samples,
      temperature=FLAGS.temperature, seed=FLAGS.seed, pairs_per_batch=FLAGS.pairs_per_batch,
      sample_batch=FLAGS.sample_batch, bpd_examples=FLAGS.bpd_examples or None,
      judge_cache=FLAGS.judge_cache, model_name=FLAGS.model_name)
  with open(f"{FLAGS.out_dir}/results.md", encoding="utf-8") as f:
    print(f.read())
  del results
  return 0


def run():
  app.run(lambda argv: run_main(main, argv, check_flags))


if __name__ == "__main__":
  run()
