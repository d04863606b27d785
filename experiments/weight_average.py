"""Does averaging a run's weights over its last checkpoints draw better digits than any one of them?

  .venv/bin/python experiments/weight_average.py --run_dir workspace/runs/long_cpu_small \
      --steps 15000,16000,17000 --num_captions 100 --num_samples 4

The long cpu_small run's judge accuracy swings by 10-20 points between checkpoints a few hundred
steps apart (constant learning rate), which suggests the weights oscillate around a better point.
This judges each listed checkpoint and the uniform average of their model weights with the
trainer's own probe (fixed validation and held-out captions, fixed sampling seed), and writes the
table to ``--out`` (JSON). If the average wins, an exponential moving average of the weights
during training is the cheap fix.
"""

import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FLAGS = flags.FLAGS


def define_flags():
  # Only when run as the program (as every experiment): they share flag names.
  flags.DEFINE_string("run_dir", None, "a training run", required=True)
  flags.DEFINE_string("data_dir", "workspace/data/mnist_captions", "its data set")
  flags.DEFINE_list("steps", None, "checkpoint steps to judge and average", required=True)
  flags.DEFINE_integer("num_captions", 100, "validation and held-out captions each")
  flags.DEFINE_integer("num_samples", 4, "samples per caption")
  flags.DEFINE_integer("seed", 0, "sampling seed (the same for every model judged)")
  flags.DEFINE_string("out", None, "JSON table to write (default: <run_dir>/weight_average.json)")


def main(argv):
  del argv
  from text2pixel.threads import configure_threads
  configure_threads(0, 0)
  import numpy as np
  import tensorflow as tf
  from experiments.learning_curve import model_and_probe

  _, model, probe = model_and_probe(FLAGS.run_dir, FLAGS.data_dir, FLAGS.num_captions,
                                    FLAGS.num_samples, FLAGS.seed)
  checkpoints = os.path.join(FLAGS.run_dir, "checkpoints")
  rows, weights = [], []
  for step in FLAGS.steps:
    path = os.path.join(checkpoints, f"ckpt-{int(step)}")
    if not tf.io.gfile.exists(path + ".index"):
      raise app.UsageError(f"{path} does not exist")
    tf.train.Checkpoint(model=model).restore(path).expect_partial()
    weights.append([w.numpy() for w in model.weights])
    rows.append({"model": f"step {int(step)}", **probe()})
    print(json.dumps(rows[-1]), flush=True)
  for variable, values in zip(model.weights, zip(*weights)):
    variable.assign(np.mean(values, axis=0))
  rows.append({"model": f"average of steps {','.join(FLAGS.steps)}", **probe()})
  print(json.dumps(rows[-1]), flush=True)
  out = FLAGS.out or os.path.join(FLAGS.run_dir, "weight_average.json")
  with open(out, "w") as f:
    json.dump({"run_dir": FLAGS.run_dir, "captions_per_split": FLAGS.num_captions,
               "samples_per_caption": FLAGS.num_samples, "rows": rows}, f, indent=1)
  print(f"\n{'model':<40} {'judge (validation)':>20} {'judge (held-out)':>18}")
  for row in rows:
    print(f"{row['model']:<40} {row['judge_accuracy']:>19.1%} "
          f"{row['judge_accuracy_heldout']:>17.1%}")
  print(f"wrote {out}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
