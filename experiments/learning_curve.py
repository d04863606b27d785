"""The learning curve of a training run: digit-judge accuracy, caption gain and bits/dim by step.

  .venv/bin/python experiments/learning_curve.py --run_dir workspace/runs/long_cpu_small \
      --data_dir workspace/data/mnist_captions --num_captions 100 --num_samples 4

For every checkpoint the run kept (``--keep_checkpoints`` large and ``--checkpoint_every`` set the
resolution), samples ``num_samples`` images (``--temperature``, default 1) for the first
``num_captions`` validation captions and as many held-out captions, with a fixed seed, and scores them with the
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
  flags.DEFINE_float("temperature", 1.0, "sampling temperature")
  flags.DEFINE_integer("every", 1, "judge every k-th kept checkpoint")
  flags.DEFINE_list("steps", [], "judge only the checkpoints of these steps")
  flags.DEFINE_string("out", "", "rows to this JSON (default <run_dir>/learning_curve.json; "
                      "the picture is drawn for the default only)")


def checkpoint_path(run_dir: str, step=None) -> str:
  """The run's checkpoint ckpt-STEP, or its latest with no step; exits naming what is missing."""
  from text2pixel import layout
  checkpoints = os.path.join(run_dir, "checkpoints")
  path = (layout.latest_checkpoint(checkpoints) if step is None
          else os.path.join(checkpoints, f"ckpt-{step}"))
  if path is None or not os.path.exists(path + ".index"):
    sys.exit(f"no checkpoint {path or 'at all'} in {checkpoints}")
  return path


def model_and_probe(run_dir: str, data_dir: str, num_captions: int, num_samples: int, seed: int,
                    temperature: float = 1.0):
  """(config, a model of the run's config, the trainer's judge probe on that model: fixed
  validation and held-out captions, fixed seed and temperature). Restore weights into the model,
  then call the probe."""
  from text2pixel import judge as judge_lib, layout, model as model_lib
  config, vocab, _ = layout.load_run_config(run_dir)
  model = model_lib.build(config, len(vocab))
  judge = judge_lib.load_or_train_judge(num_threads=0, log=print)
  return config, model, judge_lib.CaptionJudgeProbe(judge, model, data_dir, num_captions,
                                                    num_samples, seed, temperature)


def restored_model_and_probe(run_dir: str, data_dir: str, step, num_captions: int,
                             num_samples: int, seed: int):
  """model_and_probe with the run's checkpoint of ``step`` (None: the latest) restored:
  (config, model, probe, checkpoint path, the vocabulary ids of the digit words "0" ... "9")."""
  from text2pixel import layout, training
  config, model, probe = model_and_probe(run_dir, data_dir, num_captions, num_samples, seed)
  _, vocab, _ = layout.load_run_config(run_dir)
  path = checkpoint_path(run_dir, step)
  training.restore_model(model, config, path)
  return config, model, probe, path, set(training.digit_word_ids(vocab).values())


def main(argv):
  del argv

  from text2pixel.threads import configure_threads
  configure_threads(1, 0)
  import tensorflow as tf
  from text2pixel import pictures, training

  config, model, probe = model_and_probe(FLAGS.run_dir, FLAGS.data_dir, FLAGS.num_captions,
                                         FLAGS.num_samples, FLAGS.seed, FLAGS.temperature)
  step_var = tf.Variable(0, dtype=tf.int64)
  seconds_var = tf.Variable(0.0, dtype=tf.float64)
  state = tf.train.get_checkpoint_state(os.path.join(FLAGS.run_dir, "checkpoints"))
  if state is None:
    sys.exit(f"{FLAGS.run_dir} has no checkpoints")
  paths = list(state.all_model_checkpoint_paths)[::-1][::FLAGS.every][::-1]
  if FLAGS.steps:
    paths = [os.path.join(FLAGS.run_dir, "checkpoints", f"ckpt-{int(s)}") for s in FLAGS.steps]

  out_json = FLAGS.out or os.path.join(FLAGS.run_dir, "learning_curve.json")
  rows = {}
  if os.path.exists(out_json):
    rows = {row["checkpoint"]: row for row in json.load(open(out_json))}
  for path in paths:
    name = os.path.basename(path)
    if name in rows:
      continue
    tf.train.Checkpoint(step=step_var, train_seconds=seconds_var).restore(path).expect_partial()
    training.restore_model(model, config, path)  # the weights' average where the run keeps one
    averaged = bool(config.ema_decay) and training.checkpoint_has(path, training.AVERAGE_KEY)
    accuracy = probe()
    row = {"checkpoint": name, "step": int(step_var.numpy()),
           "hours": float(seconds_var.numpy()) / 3600,
           "weights": "moving average" if averaged else "as trained",
           "temperature": FLAGS.temperature,
           "judge_validation": accuracy["judge_accuracy"],
           "judge_heldout": accuracy["judge_accuracy_heldout"],
           "judged_validation": len(probe.sets["judge_accuracy"]["relations"]),
           "judged_heldout": len(probe.sets["judge_accuracy_heldout"]["relations"])}
    rows[name] = row
    print(json.dumps(row), flush=True)
    with open(out_json, "w") as f:
      json.dump(sorted(rows.values(), key=lambda r: r["step"]), f, indent=1)

  if FLAGS.out:
    print(f"wrote {out_json}")
    return
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
