"""Reference points for bits/dim: the entropy of the pixel histogram, and of simple count models.

  .venv/bin/python experiments/pixel_entropy.py --data_dir workspace/data/mnist_captions

A model that has learnt nothing but the histogram of pixel values scores H(x) bits/dim; a model
that is stuck there (as cpu_small was at learning rate 1e-3) shows exactly that number.
"""

import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FLAGS = flags.FLAGS


def define_flags():
  # Only when run as the program: the experiments share flag names (--data_dir, --run_dir, ...),
  # tests and other experiments import their modules, and absl refuses a name defined twice.
  flags.DEFINE_string("data_dir", "workspace/data/mnist_captions", "the data set")
  flags.DEFINE_string("split", "validation", "its split whose images are counted")


def entropy_bits(values: np.ndarray) -> float:
  counts = np.bincount(values, minlength=256).astype(np.float64)
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log2(p)).sum())


def conditional_entropy_bits(values: np.ndarray, context: np.ndarray) -> float:
  total = 0.0
  for key in np.unique(context):
    mask = context == key
    total += mask.mean() * entropy_bits(values[mask])
  return total


def main(argv):
  del argv
  from text2pixel import tfrecords
  images = tfrecords.load_split(FLAGS.data_dir, FLAGS.split)["image"].astype(np.int64)
  n, side, _ = images.shape
  x = images.reshape(n, -1)
  previous = np.concatenate([np.zeros((n, 1), np.int64), x[:, :-1]], 1) // 16
  above = np.concatenate([np.zeros((n, side), np.int64), x[:, :-side]], 1) // 16
  print(f"{FLAGS.split}: {n} images of {side}x{side}")
  print(f"H(x)                              {entropy_bits(x.ravel()):.3f} bits/dim  (histogram only)")
  print(f"H(x | previous pixel / 16)        "
        f"{conditional_entropy_bits(x.ravel(), previous.ravel()):.3f} bits/dim")
  print(f"H(x | previous / 16, above / 16)  "
        f"{conditional_entropy_bits(x.ravel(), (previous * 16 + above).ravel()):.3f} bits/dim")


if __name__ == "__main__":
  define_flags()
  app.run(main)
