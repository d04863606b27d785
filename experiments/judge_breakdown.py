"""Why a model's samples fail the digit judge: causes by caption kind and relation, with pictures.

  .venv/bin/python experiments/judge_breakdown.py --run_dir workspace/runs/lrdrop_2e-4 \
      --step 13797 --num_captions 200 --num_samples 10 --out experiments/results/breakdown

The judge's one number (experiments/learning_curve.py) does not say what to change. This samples
the same captions with the same seed as learning_curve.py (the trainer's probe), judges every
sample, and sorts the failures into judge.CAUSES: digits swapped (the layout drawn, the caption's
order not), a named place blank, a place read as another digit, a place read without confidence,
ink outside the named places. Writes <out>.json (counts by split x caption kind x relation, and
the most frequent digit confusions), <out>.md (the same as tables) and <out>.png (examples of
each cause, labelled with the judge's verdict).
"""

import collections
import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from experiments.learning_curve import checkpoint_path, model_and_probe  # noqa: E402
from experiments.runner import write_outputs  # noqa: E402

FLAGS = flags.FLAGS
SPLITS = {"judge_accuracy": "validation", "judge_accuracy_heldout": "held-out"}
EXAMPLES_PER_CAUSE = 8


def define_flags():
  flags.DEFINE_string("run_dir", None, "a training run", required=True)
  flags.DEFINE_integer("step", None, "the checkpoint's step (default: the latest)")
  flags.DEFINE_string("data_dir", "workspace/data/mnist_captions", "its data set")
  flags.DEFINE_integer("num_captions", 200, "validation and held-out captions each")
  flags.DEFINE_integer("num_samples", 10, "samples per caption")
  flags.DEFINE_integer("seed", 0, "sampling seed (learning_curve.py's default)")
  flags.DEFINE_float("temperature", 1.0, "sampling temperature")
  flags.DEFINE_string("out", None, "output path without extension", required=True)


def breakdown(relations, causes, named, predicted):
  """Counts of causes by caption kind and by relation, and wrong-digit confusions."""
  from text2pixel import judge as judge_lib
  from datasets import mnist_captions
  relations = np.array([judge_lib._relation_str(r) for r in relations])
  kinds = np.where(np.isin(relations, mnist_captions.TWO_DIGIT), "two digits", "one digit")

  def counts(mask):
    found = collections.Counter(causes[mask])
    return {"samples": int(mask.sum()), **{c: int(found[c]) for c in judge_lib.CAUSES}}

  confusions = collections.Counter()
  for slot in range(2):
    wrong = (named[:, slot] >= 0) & (predicted[:, slot] != named[:, slot]) & \
        (causes == "wrong digit")
    confusions.update(f"{n} read as {p}" for n, p in zip(named[wrong, slot],
                                                         predicted[wrong, slot]))
  # Two-digit captions place by place: is the failure one place or both, and is it binding
  # (one of the caption's digits drawn in both places)?
  pair = (named[:, 1] >= 0) & (named[:, 0] != named[:, 1])
  slots = {"first-named digit read right": float(np.mean(predicted[pair, 0] == named[pair, 0])),
           "second-named digit read right": float(np.mean(predicted[pair, 1] == named[pair, 1])),
           "one of the caption's digits in both places": float(np.mean(
               (predicted[pair, 0] == predicted[pair, 1]) &
               np.isin(predicted[pair, 0], named[pair].ravel()))),
           "pairs of distinct digits": int(pair.sum())}
  return {"all": counts(np.ones(len(causes), bool)), "two distinct digits": slots,
          "by_kind": {k: counts(kinds == k) for k in ("one digit", "two digits")},
          "by_relation": {r: counts(relations == r) for r in mnist_captions.RELATIONS
                          if (relations == r).any()},
          "confusions": dict(confusions.most_common(10))}


def shares(table):
  """A breakdown's headline shares: one-digit captions right, two-digit captions right, and
  second-named digits read in their place (pairs of different digits)."""
  kinds = table["by_kind"]
  right = {kind: kinds[kind]["right"] / max(1, kinds[kind]["samples"]) for kind in kinds}
  return {"one digit right": right["one digit"], "two digits right": right["two digits"],
          "second-named digit read right":
              table["two distinct digits"]["second-named digit read right"]}


def table(rows, causes):
  lines = ["| | samples | " + " | ".join(causes) + " |",
           "| --- | ---: | " + " | ".join("---:" for _ in causes) + " |"]
  for name, row in rows.items():
    share = [f"{100 * row[c] / row['samples']:.1f}%" if row["samples"] else "-" for c in causes]
    lines.append(f"| {name} | {row['samples']} | " + " | ".join(share) + " |")
  return lines


def main(argv):
  del argv
  from text2pixel.threads import configure_threads
  configure_threads(1, 0)
  from text2pixel import judge as judge_lib, pictures, training

  config, model, probe = model_and_probe(FLAGS.run_dir, FLAGS.data_dir, FLAGS.num_captions,
                                         FLAGS.num_samples, FLAGS.seed, FLAGS.temperature)
  path = checkpoint_path(FLAGS.run_dir, FLAGS.step)
  training.restore_model(model, config, path)
  print(f"sampling {probe.num_images} images from {path}", flush=True)

  result = {"checkpoint": path, "temperature": FLAGS.temperature, "seed": FLAGS.seed,
            "captions_per_split": FLAGS.num_captions, "samples_per_caption": FLAGS.num_samples}
  examples, labels = [], []
  for metric, images in probe.samples().items():
    s = probe.sets[metric]
    details = judge_lib.judge_details(probe.judge, images, s["relations"], s["digits"])
    causes = judge_lib.failure_causes(details)
    result[SPLITS[metric]] = breakdown(s["relations"], causes, details["named"],
                                       details["predicted"])
    for cause in judge_lib.CAUSES:
      # Every num_samples-th hit, so the examples come from different captions.
      hits = np.flatnonzero(causes == cause)[::FLAGS.num_samples][:EXAMPLES_PER_CAUSE // 2]
      for i in hits:
        caption = judge_lib.MnistCaption(judge_lib._relation_str(s["relations"][i]),
                                         tuple(s["digits"][i]))
        verdict = judge_lib.judge_verdicts(probe.judge, caption, images[i:i + 1])[0]
        examples.append(images[i])
        # The picture's font has no check marks.
        verdict = verdict.replace(": \u2713", "").replace("\u2717 ", "")
        labels.append(f"{cause} ({SPLITS[metric]}): {verdict}")

  causes = list(judge_lib.CAUSES)
  md = [f"# Why samples fail the digit judge: `{path}`", "",
        f"{FLAGS.num_captions} captions per split x {FLAGS.num_samples} samples, seed "
        f"{FLAGS.seed}, temperature {FLAGS.temperature}. Command:", "",
        "    .venv/bin/python " + " ".join(sys.argv), "",
        "Each sample gets the first cause that applies, in the columns' order "
        "(`text2pixel.judge.failure_causes`).", ""]
  for split in SPLITS.values():
    r = result[split]
    md += [f"## {split} captions", ""]
    md += table({"all": r["all"], **r["by_kind"], **r["by_relation"]}, causes)
    md += ["", "Two distinct digits, place by place (the classifier's reading, whatever its "
           "confidence): " + ", ".join(f"{k} {v:.1%}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in r["two distinct digits"].items()) + "."]
    md += ["", "Most frequent wrong digits: " +
           (", ".join(f"{k} ({v})" for k, v in r["confusions"].items()) or "none"), ""]
  write_outputs(FLAGS.out, result, md)
  pictures.save(pictures.tile_grid(np.stack(examples), labels, cols=8), FLAGS.out + ".png")
  print(f"wrote {FLAGS.out}.png")


if __name__ == "__main__":
  define_flags()
  app.run(main)
