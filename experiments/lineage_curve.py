"""The learning curve of a model trained across several runs, each started from the last one's
weights (--init_from): digit judge, caption gain and bits/dim against cumulative steps and hours.

  .venv/bin/python experiments/lineage_curve.py --run_dir workspace/runs/cfg_dropout_0.1 \
      --measured "23004=0.413/0.413,43362=0.529/0.509" --out pretrained/learning_curve.png

Follows ``run.json``'s ``init_from`` back to the first run. A run started at its parent's
checkpoint N (``init_checkpoint`` in run.json; runs made before it was recorded started from
their parent's last step, what train_result.json says) continues the step count at N, and its
hours at the parent's hours there; the parent's later steps, if any, are not part of the lineage.
Within a run, hours are its checkpointed training minutes spread evenly over its steps.

Judge values are the trainer's in-training judge (``validation/judge_accuracy[_heldout]``,
``--judge_captions`` x ``--judge_samples`` per split at each run's own guidance); ``--measured``
adds larger measurements (e.g. the evaluate binary's 200 x 10) as separate points.
Writes the picture and a JSON of the rows beside it.
"""

import json
import os
import re
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from experiments.cpu_small_sweep import validation_history  # noqa: E402

FLAGS = flags.FLAGS
TAGS = ("judge_accuracy", "judge_accuracy_heldout", "caption_gain_bits_per_image", "bits_per_dim")


def define_flags():
  flags.DEFINE_string("run_dir", None, "the last run of the lineage", required=True)
  flags.DEFINE_list("measured", [], "STEP=VALIDATION/HELDOUT[@LABEL]: judge accuracies measured "
                    "at cumulative steps; points of one label form a series")
  flags.DEFINE_string("measured_label", "evaluate binary, 200 captions x 10 samples",
                      "legend of --measured")
  flags.DEFINE_string("out", None, "the picture (.png); the rows go to the same name .json",
                      required=True)


def lineage(run_dir):
  """[(run_dir, start_step)] from the first run to ``run_dir`` (absolute paths); start_step is
  the parent's checkpoint this run started from (0 for the first). A parent that is gone (e.g.
  the run folder in pretrained/ names a workspace run of another machine) ends the chain there."""
  from text2pixel import layout
  chain, run_dir = [], os.path.abspath(run_dir)
  while run_dir:
    info = layout.read_run_info(run_dir)
    parent, start = info.get("init_from"), 0
    if parent:
      if info.get("init_checkpoint"):
        start = layout.checkpoint_step(info["init_checkpoint"])
      elif os.path.exists(os.path.join(parent, "train_result.json")):
        with open(os.path.join(parent, "train_result.json")) as f:
          start = json.load(f)["step"]  # made before init_checkpoint was recorded: its last step
      if not os.path.isdir(parent):
        print(f"note: {run_dir} started from {parent}, which is not here; the curve starts at "
              f"{run_dir}")
        parent = None
    chain.append((run_dir, start))
    run_dir = parent
  chain.reverse()
  return chain


def rows_of(chain):
  """(rows, starts): one row per validation of the lineage (cumulative step and hours, run name,
  TAGS), and each run's (first step, hours there) along the lineage."""
  rows, starts = [], []
  step_offset, hours_offset = chain[0][1], 0.0  # a chain cut short starts where its first run did
  for i, (run_dir, _) in enumerate(chain):
    path = os.path.join(run_dir, "train_result.json")
    if not os.path.exists(path):
      raise app.UsageError(f"{path} is missing (the run was killed before it wrote it); resume "
                           "the run, or stop it with SIGTERM, and try again")
    with open(path) as f:
      result = json.load(f)
    hours_per_step = result["minutes"] / 60 / max(result["step"], 1)
    starts.append((step_offset, hours_offset))
    # The steps of this run that its child (if any) built on.
    last = chain[i + 1][1] if i + 1 < len(chain) else result["step"]
    for step, values in sorted(validation_history(run_dir).items()):
      if step > last:
        continue
      rows.append({"run": os.path.basename(run_dir), "run_step": step,
                   "step": step_offset + step, "hours": hours_offset + step * hours_per_step,
                   **{tag: values[tag] for tag in TAGS if tag in values}})
    step_offset += last
    hours_offset += last * hours_per_step
  return rows, starts


def parse_measured(items, default_label):
  """--measured items STEP=VALIDATION/HELDOUT[@LABEL] -> {label: {step: (validation, held-out)}}."""
  measured = {}
  for item in items:
    match = re.fullmatch(r"\s*(\d+)\s*=\s*([0-9.]+)\s*/\s*([0-9.]+)\s*(?:@(.+))?", item)
    if not match:
      raise app.UsageError(f"--measured item {item!r} is not STEP=VALIDATION/HELDOUT[@LABEL], "
                           "e.g. 43362=0.529/0.509@evaluate binary")
    step, validation, heldout, label = match.groups()
    if not (0 <= float(validation) <= 1 and 0 <= float(heldout) <= 1):
      raise app.UsageError(f"--measured item {item!r}: accuracies are fractions in [0, 1]")
    measured.setdefault(label or default_label, {})[int(step)] = (float(validation),
                                                                    float(heldout))
  return measured


def main(argv):
  del argv
  from text2pixel import pictures
  measured = parse_measured(FLAGS.measured, FLAGS.measured_label)
  chain = lineage(FLAGS.run_dir)
  rows, starts = rows_of(chain)
  marks = [(step, f"{os.path.basename(run_dir)} ({hours:.1f} h)")
           for (run_dir, start), (step, hours) in zip(chain, starts) if start]
  series = lambda tag: ([r["step"] for r in rows if tag in r], [r[tag] for r in rows if tag in r])
  judge_series = {"validation captions (in training)": series("judge_accuracy"),
                  "held-out combinations (in training)": series("judge_accuracy_heldout")}
  for label, points in measured.items():
    steps = sorted(points)
    judge_series[f"validation, {label}"] = (steps, [points[s][0] for s in steps])
    judge_series[f"held-out, {label}"] = (steps, [points[s][1] for s in steps])
  hours = rows[-1]["hours"] if rows else 0.0
  x_label = f"steps ({hours:.1f} h of training)"
  x_range = (0, rows[-1]["step"] if rows else 1)  # every panel on the same axis
  picture = pictures.line_chart([
      {"title": "digit judge: fraction of samples right", "x_label": x_label,
       "series": judge_series, "marks": marks, "x_range": x_range},
      {"title": "caption gain, bits per image (validation)", "x_label": x_label,
       "series": {"caption gain": series("caption_gain_bits_per_image")}, "marks": marks,
       "x_range": x_range},
      {"title": "bits/dim (validation)", "x_label": x_label,
       "series": {"bits/dim": series("bits_per_dim")}, "marks": marks, "x_range": x_range},
  ])
  path = pictures.save(picture, FLAGS.out)
  rows_path = os.path.splitext(FLAGS.out)[0] + ".json"
  with open(rows_path, "w") as f:
    json.dump({"lineage": [{"run": os.path.basename(r), "started_at_parent_step": s}
                           for r, s in chain],
               "measured": {label: {str(k): v for k, v in points.items()}
                            for label, points in measured.items()}, "rows": rows}, f, indent=1)
  print(f"wrote {path} and {rows_path}: {len(chain)} runs, {rows[-1]['step'] if rows else 0:,} "
        f"steps, {hours:.2f} h")


if __name__ == "__main__":
  define_flags()
  app.run(main)
