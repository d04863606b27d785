"""The learning curve of a training run: digit-judge accuracy, caption gain and bits/dim by step.

  .venv/bin/python experiments/learning_curve.py --run_dir workspace/runs/long_cpu_small \
      --data_dir workspace/data/mnist_captions --num_captions 100 --num_samples 4

For every checkpoint the run kept (``--keep_checkpoints`` large and ``--checkpoint_every`` set the
resolution), samples ``num_samples`` images at temperature 1 for the first ``num_captions``
validation captions and as many held-out captions, with a fixed seed, and scores them with the
project's digit judge. Bits/dim and caption gain come from the run's own validation summaries
(TensorBoard), the hours from the checkpointed training time. Writes ``learning_curve.json``
(one row per checkpoint; a rerun judges only new checkpoints) and ``learning_curve.png`` into the
run directory.
"""

import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from experiments.cpu_small_sweep import validation_history  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
  # Only when run as the program: the experiments share flag names (--data_dir, --run_dir, ...),
  # tests and other experiments import their modules, and absl refuses a name defined twice.
  flags.DEFINE_string("run_dir", None, "a training run", required=True)
  flags.DEFINE_string("data_dir", "workspace/data/mnist_captions", "its data set")
  flags.DEFINE_integer("num_captions", 100, "validation and held-out captions each")
  flags.DEFINE_integer("num_samples", 4, "samples per caption")
  flags.DEFINE_integer("seed", 0, "sampling seed (the same for every checkpoint)")
  flags.DEFINE_integer("every", 1, "judge every k-th kept checkpoint")


def main(argv):
  del argv

  from text2pixel.threads import configure_threads
  configure_threads(1, 0)
  import numpy as np
  import tensorflow as tf
  from text2pixel import config as config_lib, judge as judge_lib, model as model_lib, pictures
  from text2pixel import sampling, tfrecords, training
  from text2pixel.text import Vocabulary

  config = config_lib.load(os.path.join(FLAGS.run_dir, "config.json"))
  vocab = Vocabulary.load(os.path.join(FLAGS.run_dir, "vocab.json"))
  model = model_lib.build(config, len(vocab))
  step_var = tf.Variable(0, dtype=tf.int64)
  seconds_var = tf.Variable(0.0, dtype=tf.float64)
  state = tf.train.get_checkpoint_state(os.path.join(FLAGS.run_dir, "checkpoints"))
  if state is None:
    sys.exit(f"{FLAGS.run_dir} has no checkpoints")
  paths = list(state.all_model_checkpoint_paths)[::-1][::FLAGS.every][::-1]
  judge = judge_lib.load_or_train_judge(num_threads=0, log=print)
  generate = sampling.make_generate_fn(model, "sample", num_samples=FLAGS.num_samples)
  splits = {name: tfrecords.load_split(FLAGS.data_dir, name, config.image_side,
                                       limit=FLAGS.num_captions)
            for name in ("validation", "heldout")}

  out_json = os.path.join(FLAGS.run_dir, "learning_curve.json")
  rows = {}
  if os.path.exists(out_json):
    rows = {row["checkpoint"]: row for row in json.load(open(out_json))}
  for path in paths:
    name = os.path.basename(path)
    if name in rows:
      continue
    tf.train.Checkpoint(step=step_var, train_seconds=seconds_var).restore(path).expect_partial()
    training.restore_model(model, config, path)  # the weights' average where the run keeps one
    row = {"checkpoint": name, "step": int(step_var.numpy()),
           "hours": float(seconds_var.numpy()) / 3600}
    for split, data in splits.items():
      ids = tfrecords.pad_ids(list(data["caption_ids"]), config.max_caption_len)
      lengths = np.array([len(x) for x in data["caption_ids"]], np.int32)
      images = generate(tf.constant(ids), tf.constant(lengths), tf.constant(1.0),
                        tf.constant(FLAGS.seed))["images"].numpy()
      count = len(ids)
      relations = np.repeat(data["relation"], FLAGS.num_samples)
      digits = [d for d in data["digits"] for _ in range(FLAGS.num_samples)]
      row[f"judge_{split}"] = judge_lib.judge_accuracy(
          judge, images.reshape(-1, *images.shape[2:]), relations, digits)["accuracy"]
      row[f"judged_{split}"] = count * FLAGS.num_samples
    rows[name] = row
    print(json.dumps(row), flush=True)
    with open(out_json, "w") as f:
      json.dump(sorted(rows.values(), key=lambda r: r["step"]), f, indent=1)

  ordered = sorted(rows.values(), key=lambda r: r["step"])
  scalars = {}  # {tag: {step: value}}
  for step, values in validation_history(FLAGS.run_dir).items():
    for tag, value in values.items():
      scalars.setdefault(tag, {})[step] = value
  steps = [r["step"] for r in ordered]
  hours = ordered[-1]["hours"] if ordered else 0
  at = lambda tag: ([s for s in sorted(scalars.get(tag, {}))],
                    [scalars[tag][s] for s in sorted(scalars.get(tag, {}))])
  picture = pictures.line_chart([
      {"title": f"digit judge: fraction of samples right ({FLAGS.num_captions} captions x "
                f"{FLAGS.num_samples} samples each)", "x_label": f"steps ({hours:.1f} h)",
       "series": {"validation captions": (steps, [r["judge_validation"] for r in ordered]),
                  "held-out combinations": (steps, [r["judge_heldout"] for r in ordered])}},
      {"title": "caption gain, bits per image (validation)", "x_label": "steps",
       "series": {"caption gain": at("caption_gain_bits_per_image")}},
      {"title": "bits/dim (validation)", "x_label": "steps",
       "series": {"bits/dim": at("bits_per_dim")}},
  ])
  path = pictures.save(picture, os.path.join(FLAGS.run_dir, "learning_curve.png"))
  print(f"wrote {out_json} and {path}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
