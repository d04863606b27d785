"""Do a trained model's annotation vectors say which digit goes where? Linear probes.

  .venv/bin/python experiments/encoder_probe.py --run_dir workspace/runs/lrdrop_2e-4 \
      --out experiments/results/encoder_probe_lrdrop

For every two-digit caption the builder writes (4 relations x 90 ordered pairs of different
digits), the caption encoder's annotation vector at each word position is the input of three
linear probes (ridge regression onto one-hot targets, 5-fold cross-validation over captions):
the first-named digit, the second-named digit, and the digit of the first place in raster order
(the top or left one: the first-named digit for "left" and "top", the second for "right" and
"bottom"), which is what a pixel must know to bind digit to place. Chance is 10%. If the words
the attention reads (experiments/NOTEBOOK.md: "the", "digit", the first-named digit) carry the
first place's digit, the annotations are not what keeps pairs from being drawn right.
Writes <out>.json and <out>.md. Needs the encoder only: seconds of CPU.
"""

import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from experiments.runner import write_outputs  # noqa: E402

FLAGS = flags.FLAGS
RELATIONS = ("left", "right", "top", "bottom")
FIRST_NAMED_FIRST = ("left", "top")  # relations whose first-named digit is drawn first
TASKS = ("first-named digit", "second-named digit", "digit of the first place")


def define_flags():
  flags.DEFINE_string("run_dir", None, "a training run (its latest checkpoint)", required=True)
  flags.DEFINE_float("ridge", 1.0, "ridge penalty")
  flags.DEFINE_integer("folds", 5, "cross-validation folds")
  flags.DEFINE_string("out", None, "output path without extension", required=True)


def probe_accuracy(features, labels, ridge, folds, seed=0):
  """Cross-validated accuracy of ridge regression onto one-hot labels (argmax decision)."""
  n = len(labels)
  order = np.random.default_rng(seed).permutation(n)
  right = 0
  for k in range(folds):
    test = order[k::folds]
    train = np.setdiff1d(order, test)
    x = np.c_[features, np.ones(n)]
    targets = np.eye(10)[labels]
    gram = x[train].T @ x[train] + ridge * np.eye(x.shape[1])
    weights = np.linalg.solve(gram, x[train].T @ targets[train])
    right += int(np.sum((x[test] @ weights).argmax(1) == labels[test]))
  return right / n


def main(argv):
  del argv
  from datasets import mnist_captions
  from text2pixel import text as text_lib, tfrecords, training
  import tensorflow as tf

  config, vocab, model = training.load_run(FLAGS.run_dir)
  captions, targets = [], {task: [] for task in TASKS}
  for relation in RELATIONS:
    for first in range(10):
      for second in range(10):
        if first == second:
          continue
        captions.append(mnist_captions.caption_for(relation, (first, second)))
        targets["first-named digit"].append(first)
        targets["second-named digit"].append(second)
        targets["digit of the first place"].append(
            first if relation in FIRST_NAMED_FIRST else second)
  ids = text_lib.encode_captions(vocab, captions, config.max_caption_len)
  lengths = {len(x) for x in ids}
  if len(lengths) != 1:
    sys.exit(f"captions of different lengths {sorted(lengths)}: positions would not align")
  words = text_lib.tokenize(captions[0]) + [text_lib.EOS]
  annotations = model.encode(tf.constant(tfrecords.pad_ids(ids, config.max_caption_len)),
                             tf.constant([len(x) for x in ids], tf.int32)).numpy()
  positions = {f"{i}: {'X' if i == 2 else 'Y' if i == len(words) - 2 else w}": annotations[:, i]
               for i, w in enumerate(words)}
  positions["mean of 0-2 (what the strokes attend)"] = annotations[:, :3].mean(axis=1)
  result = {"run_dir": FLAGS.run_dir, "captions": len(captions), "ridge": FLAGS.ridge,
            "folds": FLAGS.folds, "accuracy": {}}
  for name, features in positions.items():
    result["accuracy"][name] = {task: probe_accuracy(features, np.array(targets[task]),
                                                     FLAGS.ridge, FLAGS.folds)
                                for task in TASKS}
  md = [f"# Linear probes of the caption encoder: `{FLAGS.run_dir}`", "",
        f"{len(captions)} two-digit captions (X, Y different), annotation width "
        f"{annotations.shape[-1]}, ridge {FLAGS.ridge}, {FLAGS.folds}-fold cross-validation; "
        "chance 10%. Command:", "", "    .venv/bin/python " + " ".join(sys.argv), "",
        "| word position | " + " | ".join(TASKS) + " |", "| --- | ---: | ---: | ---: |"]
  for name, row in result["accuracy"].items():
    md.append(f"| {name} | " + " | ".join(f"{100 * row[t]:.0f}%" for t in TASKS) + " |")
  write_outputs(FLAGS.out, result, md)


if __name__ == "__main__":
  define_flags()
  app.run(main)
