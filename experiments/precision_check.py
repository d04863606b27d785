"""Does mixed_bfloat16 train as well as float32? Same preset, seeds, data and steps; bits/dim.

  .venv/bin/python experiments/precision_check.py --preset cpu_small --steps 600 --seeds 1234,1,2
  .venv/bin/python experiments/precision_check.py --preset paper --steps 100

For each seed, trains the preset twice with text2pixel-train (float32, then mixed_bfloat16;
everything else equal, including the seed and so the initial weights and data order), and compares
the validation bits/dim each run reports at the end (the same fixed validation batches), also with
both checkpoints evaluated in float32. The verdict is on the mean over seeds: after a few hundred
steps a single run's bits/dim depends on when it happens to leave the pixel-histogram plateau, so
one pair of runs differs by chance about as much as the tolerance. Writes
experiments/results/precision_<preset>_<steps>.md; reruns reuse finished runs.
"""

import json
import os
import statistics
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.runner import REPO, check_not_stale, printable, run  # noqa: E402

PRECISIONS = ("float32", "mixed_bfloat16")
REPEAT = "float32_repeat"  # float32 again, same seed: how far two identical runs drift apart
FLAGS = flags.FLAGS


def define_flags():
  # Only when run as the program: the experiments share flag names (--data_dir, --run_dir, ...),
  # tests and other experiments import their modules, and absl refuses a name defined twice.
  flags.DEFINE_string("preset", "cpu_small", "config preset")
  flags.DEFINE_integer("steps", 600, "training steps per run")
  flags.DEFINE_list("seeds", ["1234"], "training seeds, one pair of runs each")
  flags.DEFINE_integer("batch_size", 0, "0: the preset's")
  flags.DEFINE_integer("eval_batches", 16, "validation batches")
  flags.DEFINE_string("data_dir", "workspace/data/mnist_captions", "the data set")
  flags.DEFINE_string("runs_dir", "workspace/runs/precision", "where the runs go")
  flags.DEFINE_boolean("repeat_float32", False,
                       "train float32 a second time (first seed), to measure run-to-run drift")
  flags.DEFINE_float("tolerance", 0.01, "relative; the issue's 1%")


def main(argv):
  del argv
  if not os.path.exists(os.path.join(REPO, FLAGS.data_dir)):
    raise SystemExit(f"no data in {FLAGS.data_dir}: build it first (scripts/main.sh does)")
  try:
    seeds = [int(s) for s in FLAGS.seeds]
  except ValueError:
    raise SystemExit(f"--seeds must be comma-separated integers, got "
                     f"'{','.join(FLAGS.seeds)}'") from None

  runs = [(seed, name) for seed in seeds for name in PRECISIONS]
  if FLAGS.repeat_float32:
    runs.append((seeds[0], REPEAT))
  results, commands, run_dirs = {}, [], {}
  for seed, name in runs:
    precision = "float32" if name == REPEAT else name
    run_dir = os.path.join(FLAGS.runs_dir, f"{FLAGS.preset}_{FLAGS.steps}_seed{seed}_{name}")
    run_dirs[seed, name] = os.path.join(REPO, run_dir)
    result_path = os.path.join(REPO, run_dir, "train_result.json")
    cmd = [sys.executable, "-m", "text2pixel.binaries.train", "--preset", FLAGS.preset,
           "--data_dir", FLAGS.data_dir, "--run_dir", run_dir, "--train_steps", str(FLAGS.steps),
           "--seed", str(seed), "--max_train_minutes", "0", "--mixed_precision", precision,
           "--eval_every", str(FLAGS.steps), "--eval_batches", str(FLAGS.eval_batches),
           "--sample_every", str(10 * FLAGS.steps), "--log_every", str(max(1, FLAGS.steps // 10))]
    overrides = dict(seed=seed, mixed_precision=precision)
    if FLAGS.batch_size:
      cmd += ["--batch_size", str(FLAGS.batch_size)]
      overrides["batch_size"] = FLAGS.batch_size
    check_not_stale(os.path.join(REPO, run_dir), FLAGS.preset, overrides)
    done = False
    if os.path.exists(result_path):
      with open(result_path) as f:
        done = json.load(f)["step"] >= FLAGS.steps
    commands.append(printable(cmd) if done else run(cmd))
    with open(result_path) as f:
      results[seed, name] = json.load(f)

  from text2pixel.threads import configure_threads
  configure_threads()  # before the float32 evaluations below start TensorFlow in this process
  float32_eval = {key: float32_bits_per_dim(run_dirs[key], FLAGS.data_dir, FLAGS.eval_batches)
                  for key in runs}
  as_trained = {key: r["validation_bits_per_dim"] for key, r in results.items()}

  def relative(fp32, bf16):
    return (bf16 - fp32) / fp32

  def verdict(fp32, bf16):
    word = "within" if abs(relative(fp32, bf16)) <= FLAGS.tolerance else "NOT within"
    return (f"{bf16 - fp32:+.4f} bits/dim ({relative(fp32, bf16):+.2%}): "
            f"**{word} {FLAGS.tolerance:.0%}**")

  def mean_std(values):
    values = list(values)
    spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.4f}{spread}"

  lines = [f"# float32 vs mixed_bfloat16: `{FLAGS.preset}`, {FLAGS.steps} steps", "",
           f"Seeds {', '.join(map(str, seeds))}: per seed, the same initial weights, data order "
           f"and validation batches ({FLAGS.eval_batches} batches) for both precisions; written by "
           "`experiments/precision_check.py`. \"as trained\": the bits/dim the training run "
           "reports, computed in its own precision; \"float32 evaluation\": the same checkpoint "
           "evaluated in float32, as text2pixel-evaluate, -sample and -export load every run.", "",
           "| seed | training precision | validation bits/dim, as trained | float32 evaluation | "
           "train minutes | s/step |", "| ---: | --- | ---: | ---: | ---: | ---: |"]
  for key in runs:
    seed, name = key
    r = results[key]
    label = "float32 (again)" if name == REPEAT else name
    lines.append(f"| {seed} | {label} | {as_trained[key]:.4f} | {float32_eval[key]:.4f} | "
                 f"{r['minutes']:.1f} | {r['minutes'] * 60 / r['step']:.2f} |")
  lines.append("")
  if len(seeds) > 1:
    lines += ["Per seed, mixed_bfloat16 − float32 (as trained): " + ", ".join(
        f"{relative(as_trained[s, 'float32'], as_trained[s, 'mixed_bfloat16']):+.2%}"
        for s in seeds) + ".", "",
              f"Mean ± std over the {len(seeds)} seeds, as trained: float32 "
              f"{mean_std(as_trained[s, 'float32'] for s in seeds)}, mixed_bfloat16 "
              f"{mean_std(as_trained[s, 'mixed_bfloat16'] for s in seeds)} bits/dim.", ""]
  for label, table in (("as trained", as_trained), ("both evaluated in float32", float32_eval)):
    fp32 = statistics.mean(table[s, "float32"] for s in seeds)
    bf16 = statistics.mean(table[s, "mixed_bfloat16"] for s in seeds)
    over = f", mean over {len(seeds)} seeds" if len(seeds) > 1 else ""
    lines += [f"mixed_bfloat16 − float32, {label}{over}: {verdict(fp32, bf16)}.", ""]
  if FLAGS.repeat_float32:
    lines += [f"The same float32 run twice (seed {seeds[0]}, same data and code): " +
              verdict(float32_eval[seeds[0], "float32"],
                      float32_eval[seeds[0], REPEAT]).split(":")[0] + ".", ""]
  lines += ["Commands:", ""]
  lines += [f"    {c}" for c in commands]
  out = os.path.join(REPO, "experiments", "results",
                     f"precision_{FLAGS.preset}_{FLAGS.steps}.md")
  with open(out, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines[:-len(commands) - 2]))
  print(f"written: {os.path.relpath(out, REPO)}")


def float32_bits_per_dim(run_dir: str, data_dir: str, batches: int) -> float:
  """The run's latest checkpoint on the trainer's validation batches, computed in float32."""
  import tensorflow as tf
  from text2pixel import metrics as metrics_lib, layout, model as model_lib, tfrecords, training
  config, _, model = training.load_run(run_dir)  # float32: nothing sets a mixed policy here
  data = tfrecords.make_dataset(layout.split_files(os.path.join(REPO, data_dir), "validation"),
                                config.batch_size, config.image_side, config.max_caption_len,
                                repeat=True)
  loss = tf.function(
      lambda b: model_lib.sequence_loss(model(b), b["image"], config.num_pixels))
  nats = [float(loss(batch)) for batch in data.take(batches)]
  return float(metrics_lib.nats_to_bits(sum(nats) / len(nats)))


if __name__ == "__main__":
  define_flags()
  app.run(main)
