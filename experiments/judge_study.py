"""Which `cpu_small` variant draws the caption's digits best after the same minutes of this CPU?

  .venv/bin/python experiments/judge_study.py --minutes 45

Trains each variant below (the `cpu_small` preset with a few fields changed) with text2pixel-train
for the same training time, the same seed and the same data, then judges its last weights (the
moving average every variant keeps) with the project's digit judge on --final_captions validation
and as many held-out captions, --final_samples samples each (experiments/learning_curve.py).
Variants are ranked by that judge accuracy and by caption gain, not by bits/dim: early bits/dim
says nothing about whether the caption's digits get drawn (experiments/NOTEBOOK.md).

Writes experiments/results/judge_study.md (table, per-variant curves of the in-training judge and
caption gain, the commands) and judge_study.png. A rerun resumes an interrupted variant (the
time bound is cumulative) and reuses finished ones; --report_only rewrites the report only.
To pause it, send SIGTERM to the trainer (the text2pixel.binaries.train process, not this one):
it checkpoints and this script stops without judging the unfinished variant.
"""

import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cpu_small_sweep import slug, validation_history  # noqa: E402
from experiments.judge_breakdown import shares  # noqa: E402
from experiments.runner import (PAPER_RECIPE, REPO, check_not_stale,  # noqa: E402
                                chosen_variants, finished, printable, run, write_result)

# What every variant changes from: the cpu_small preset as it was when the study ran, with the
# paper's BiLSTM encoder (RMSProp 5e-3, batch 16, pixel LSTM 128, attention 64). The study's
# winner, the embedding encoder, became the preset's, and the preset has changed again since
# (the shipped model's recipe); pinning the base keeps the runs on disk, their commands and this
# table the same experiment.
BASE = dict(PAPER_RECIPE)
# name -> overrides of BASE.
VARIANTS = {
    "cpu_small": {},
    "pixel LSTM 256": {"decoder_units": 256},
    "Adam 1e-3": {"optimizer": "adam", "learning_rate": 1e-3},
    # The attention never visits the second-named digit's word; the first words' BiLSTM states
    # summarise the caption and the pixels read that summary (NOTEBOOK, "Why samples fail" and
    # "What the annotations hold"). Without the LSTM no word summarises the caption.
    "embedding encoder": {"encoder": "embedding"},
    "batch 32 lr 7e-3": {"batch_size": 32, "learning_rate": 7e-3},
    "attention 128": {"attention_units": 128},
    # A wider caption encoder (nearly free: it runs once per caption).
    "encoder 128": {"word_embedding_dim": 128, "encoder_units": 128},
}
# The same for every variant: how it is watched, not what it learns. The moving average is what
# validation, the judge and exports use (WORKSPACE.md), so every variant is judged on its own.
COMMON = {"ema_decay": 0.999, "eval_every": 500, "checkpoint_every": 500, "keep_checkpoints": 3,
          "judge_captions": 50, "judge_samples": 4, "sample_every": 1_000_000,
          "train_steps": 1_000_000}
VALIDATION_IMAGES = 256  # the same images for every batch size

FLAGS = flags.FLAGS


def define_flags():
  # Only when run as the program (experiments share flag names; absl refuses duplicates).
  flags.DEFINE_float("minutes", 45.0, "training minutes per variant")
  flags.DEFINE_list("variants", list(VARIANTS), f"subset of: {', '.join(VARIANTS)}")
  flags.DEFINE_string("data_dir", "workspace/data/mnist_captions", "the data set")
  flags.DEFINE_string("runs_dir", "workspace/runs/judge_study", "where the runs go")
  flags.DEFINE_integer("final_captions", 100, "final judge: validation and held-out captions each")
  flags.DEFINE_integer("final_samples", 10, "final judge: samples per caption")
  flags.DEFINE_boolean("report_only", False, "only rewrite the report from the runs on disk")


def model_overrides(name):
  """What variant ``name`` changes from the cpu_small preset: BASE, then its own fields."""
  return {**BASE, **VARIANTS[name]}


def train_command(name, run_dir):
  overrides = {**COMMON, **model_overrides(name)}
  overrides["eval_batches"] = max(1, VALIDATION_IMAGES // overrides.get("batch_size", 16))
  cmd = [sys.executable, "-m", "text2pixel.binaries.train", "--preset", "cpu_small",
         "--data_dir", FLAGS.data_dir, "--run_dir", run_dir,
         "--max_train_minutes", str(FLAGS.minutes)]
  for field, value in overrides.items():
    cmd += [f"--{field}", str(value)]
  return cmd


def judge_command(run_dir, step):
  return [sys.executable, "experiments/learning_curve.py", "--run_dir", run_dir,
          "--data_dir", FLAGS.data_dir, "--steps", str(step),
          "--num_captions", str(FLAGS.final_captions), "--num_samples", str(FLAGS.final_samples),
          "--out", os.path.join(run_dir, "judge_final.json")]


def breakdown_command(run_dir, step):
  return [sys.executable, "experiments/judge_breakdown.py", "--run_dir", run_dir,
          "--data_dir", FLAGS.data_dir, "--step", str(step),
          "--num_captions", str(FLAGS.final_captions), "--num_samples", str(FLAGS.final_samples),
          "--out", os.path.join(run_dir, "judge_breakdown")]


def breakdown(run_dir, step):
  """judge_breakdown.py's result for the run's checkpoint at ``step`` (None if not made)."""
  path = os.path.join(REPO, run_dir, "judge_breakdown.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    result = json.load(f)
  return result if result["checkpoint"].endswith(f"ckpt-{step}") else None


def final_judge(run_dir):
  path = os.path.join(REPO, run_dir, "judge_final.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)[-1]


def main(argv):
  del argv
  names = chosen_variants(FLAGS.variants, VARIANTS, FLAGS.data_dir)

  commands, rows = [], []
  for name in names:
    run_dir = os.path.join(FLAGS.runs_dir, f"{slug(name)}_{FLAGS.minutes:g}min")
    cmd = train_command(name, run_dir)
    check_not_stale(os.path.join(REPO, run_dir), "cpu_small", model_overrides(name))
    if FLAGS.report_only or finished(os.path.join(REPO, run_dir), FLAGS.minutes):
      commands.append(printable(cmd))
    else:
      print(f"== {name}", flush=True)
      commands.append(run(cmd))
      if not finished(os.path.join(REPO, run_dir), FLAGS.minutes):
        # The trainer was stopped (SIGTERM: it checkpointed). Judging a partial run would rank
        # it unfairly; a rerun resumes it.
        raise SystemExit(f"{name}: stopped before {FLAGS.minutes:g} minutes; rerun to resume")
    result_path = os.path.join(REPO, run_dir, "train_result.json")
    if not os.path.exists(result_path):
      print(f"{name}: not trained yet", flush=True)
      continue
    with open(result_path) as f:
      result = json.load(f)
    judged = final_judge(run_dir)
    if not FLAGS.report_only and (judged is None or judged["step"] != result["step"]):
      if os.path.exists(os.path.join(REPO, run_dir, "judge_final.json")):
        os.remove(os.path.join(REPO, run_dir, "judge_final.json"))  # an earlier, shorter run's
      run(judge_command(run_dir, result["step"]))
      judged = final_judge(run_dir)
    commands.append(printable(judge_command(run_dir, result["step"])))
    # Why the samples fail (the same captions, seed and so images as the final judge).
    if not FLAGS.report_only and breakdown(run_dir, result["step"]) is None:
      run(breakdown_command(run_dir, result["step"]))
    commands.append(printable(breakdown_command(run_dir, result["step"])))
    judged = dict(judged or {}, breakdown=breakdown(run_dir, result["step"]))
    rows.append((name, run_dir, result, judged, validation_history(os.path.join(REPO, run_dir))))
  write_report(rows, commands)


def two_digit_cells(breakdown_result):
  """Validation captions of two digits: % judged right, % whose second-named digit is read."""
  if not breakdown_result:
    return ["-", "-"]
  validation = shares(breakdown_result["validation"])
  return [f"{100 * validation[name]:.1f}%"
          for name in ("two digits right", "second-named digit read right")]


def write_report(rows, commands):
  from text2pixel import pictures
  ranked = sorted(rows, key=lambda r: -(r[3]["judge_validation"] + r[3]["judge_heldout"])
                  if "judge_validation" in r[3] else 0)
  lines = [f"# `cpu_small` variants ranked by the digit judge after {FLAGS.minutes:g} minutes each",
           "", "Written by `experiments/judge_study.py` (issue 14's study). Same seed, data and "
           f"validation images ({VALIDATION_IMAGES}); every variant keeps a moving average of its "
           "weights (decay 0.999), which is what is validated and judged. Final judge: "
           f"{FLAGS.final_captions} validation and {FLAGS.final_captions} held-out captions x "
           f"{FLAGS.final_samples} samples, temperature 1, seed 0. \"Caption gain\": bits per "
           "image by which the true caption beats another image's caption. Two digits: of the "
           "validation captions naming two different digits, the share of samples judged right "
           "and the share whose second-named digit is read in its place "
           "(`experiments/judge_breakdown.py`; each run's judge_breakdown.md has the rest).", "",
           "The base is the `cpu_small` preset with the paper's BiLSTM encoder (`--encoder "
           "bilstm`), the preset when the study ran; its winner, the embedding encoder, was the "
           "preset's from 2026-11-27 until the shipped model's recipe replaced it the same "
           "day.", "",
           "| variant | overrides of the base | steps | steps/s | validation bits/dim | "
           "caption gain, bits/image | judge, validation | judge, held-out | two digits: right | "
           "second-named digit read |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for name, _, result, judged, _ in ranked:
    overrides = ", ".join(f"{k}={v}" for k, v in VARIANTS[name].items()) or "(the base)"
    judge_cells = (f"{100 * judged['judge_validation']:.1f}% | {100 * judged['judge_heldout']:.1f}%"
                   if "judge_validation" in judged else "- | -")
    judge_cells += " | " + " | ".join(two_digit_cells(judged["breakdown"]))
    steps_per_sec = result["step"] / (60 * result["minutes"])
    lines.append(f"| {name} | {overrides} | {result['step']:,} | {steps_per_sec:.2f} | "
                 f"{result['validation_bits_per_dim']:.4f} | "
                 f"{result['caption_gain_bits_per_image']:.1f} | {judge_cells} |")
  lines += ["", "By step: in-training judge (50 x 4 samples per split, validation / held-out), "
            "caption gain and validation bits/dim:", ""]
  panels = {"judge_accuracy": [], "caption_gain_bits_per_image": []}
  for name, _, result, _, history in rows:
    minutes_per_step = result["minutes"] / max(result["step"], 1)
    for tag in panels:
      points = [(step, v[tag]) for step, v in sorted(history.items()) if tag in v]
      panels[tag].append((name, [s * minutes_per_step for s, _ in points],
                          [100 * y if tag == "judge_accuracy" else y for _, y in points]))
    judge_points = ", ".join(f"{s}: {100 * v['judge_accuracy']:.1f}%/"
                             f"{100 * v.get('judge_accuracy_heldout', float('nan')):.1f}% "
                             f"{v.get('caption_gain_bits_per_image', float('nan')):.1f} bits "
                             f"{v.get('bits_per_dim', float('nan')):.3f} bpd"
                             for s, v in sorted(history.items()) if "judge_accuracy" in v)
    lines.append(f"- {name}: {judge_points}")
  picture = pictures.line_chart([
      {"title": "in-training digit judge, % of validation-caption samples right",
       "x_label": "training minutes", "series": {n: (x, y) for n, x, y in
                                                 panels["judge_accuracy"]}},
      {"title": "caption gain, bits per image (validation)", "x_label": "training minutes",
       "series": {n: (x, y) for n, x, y in panels["caption_gain_bits_per_image"]}}])
  results_dir = os.path.join(REPO, "experiments", "results")
  pictures.save(picture, os.path.join(results_dir, "judge_study.png"))
  lines += ["", "![curves](judge_study.png)", "", "Commands:", ""] + [f"    {c}" for c in commands]
  write_result("judge_study.md", lines)


if __name__ == "__main__":
  define_flags()
  app.run(main)
