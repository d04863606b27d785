"""Does classifier-free guidance make a model draw the caption's digits more often?

  .venv/bin/python experiments/guidance.py --run_dir workspace/runs/lrdrop_2e-4 --step 13797 \
      --scales 1,1.5,2,3 --num_captions 100 --num_samples 10 --out experiments/results/guidance_lrdrop

Samples the judge's fixed captions (the same captions and seed as experiments/learning_curve.py)
with sampling.generate(guidance=scale) at each scale: pixel logits l_empty + s (l_caption - l_empty), the
empty caption being <eos> alone (scale 1 is plain ancestral sampling). Judges them and writes
<out>.json and <out>.md: per scale the judge accuracy per split, and for the two-digit captions
the share right and the second-named digit's place accuracy (judge_breakdown's measures).
"""

import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from experiments.judge_breakdown import SPLITS, breakdown, shares  # noqa: E402
from experiments.learning_curve import checkpoint_path, model_and_probe  # noqa: E402
from experiments.runner import write_outputs  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("run_dir", None, "a training run", required=True)
  flags.DEFINE_integer("step", None, "the checkpoint's step", required=True)
  flags.DEFINE_string("data_dir", "workspace/data/mnist_captions", "its data set")
  flags.DEFINE_list("scales", ["1", "2", "3"], "guidance scales (1 = no guidance)")
  flags.DEFINE_integer("num_captions", 100, "validation and held-out captions each")
  flags.DEFINE_integer("num_samples", 10, "samples per caption")
  flags.DEFINE_integer("seed", 0, "sampling seed")
  flags.DEFINE_string("out", None, "output path without extension", required=True)


def main(argv):
  del argv
  from text2pixel.threads import configure_threads
  configure_threads(1, 0)
  from text2pixel import judge as judge_lib, sampling, training

  config, model, probe = model_and_probe(FLAGS.run_dir, FLAGS.data_dir, FLAGS.num_captions,
                                         FLAGS.num_samples, FLAGS.seed)
  path = checkpoint_path(FLAGS.run_dir, FLAGS.step)
  training.restore_model(model, config, path)
  rows = []
  for scale in [float(s) for s in FLAGS.scales]:
    guided = sampling.make_generate_fn(model, "sample", FLAGS.num_samples, guidance=scale)
    row = {"scale": scale}
    for metric, images in probe.samples(guided).items():
      s = probe.sets[metric]
      details = judge_lib.judge_details(probe.judge, images, s["relations"], s["digits"])
      table = breakdown(s["relations"], judge_lib.failure_causes(details), details["named"],
                        details["predicted"])
      row[SPLITS[metric]] = {"judge": float(details["correct"].mean()), **shares(table)}
    rows.append(row)
    print(json.dumps(row), flush=True)

  result = {"checkpoint": path, "captions_per_split": FLAGS.num_captions,
            "samples_per_caption": FLAGS.num_samples, "seed": FLAGS.seed, "rows": rows}
  md = [f"# Classifier-free guidance: `{path}`", "",
        f"{FLAGS.num_captions} captions per split x {FLAGS.num_samples} samples, seed "
        f"{FLAGS.seed}, temperature 1. Command:", "", "    .venv/bin/python " + " ".join(sys.argv),
        "", "| scale | split | judge | one digit right | two digits right | "
        "second-named digit read |", "| ---: | --- | ---: | ---: | ---: | ---: |"]
  for row in rows:
    for split in SPLITS.values():
      r = row[split]
      md.append(f"| {row['scale']:g} | {split} | {r['judge']:.1%} | {r['one digit right']:.1%} | "
                f"{r['two digits right']:.1%} | {r['second-named digit read right']:.1%} |")
  write_outputs(FLAGS.out, result, md)


if __name__ == "__main__":
  define_flags()
  app.run(main)
