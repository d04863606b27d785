"""The learning curve of a model trained across several runs, each started from the last one's
weights (--init_from): digit judge, caption gain and bits/dim against cumulative steps and hours.

  .venv/bin/python experiments/lineage_curve.py --run_dir workspace/runs/cfg_dropout_0.1 \
      --measured "23004=0.413/0.413,43362=0.529/0.509" --out pretrained/learning_curve.png

Follows ``run.json``'s ``init_from`` back to the first run. A run started at its parent's
checkpoint N (``init_checkpoint`` in run.json; runs made before it was recorded started from
their parent's last step, what train_result.json says) continues the step count at N, and its
hours at the parent's hours there; the parent's later steps, if any, are not part of the lineage.
Within a run, hours are its checkpointed training minutes spread evenly over its steps.

A run's parent may be gone from this machine, or hold a later run of the same lineage
(pretrained/cpu_small_in_progress is overwritten by each shipped snapshot, and its run.json then
points back into the chain): the chain ends there. ``--earlier`` then supplies the lineage
before it from an earlier call's JSON (e.g. the shipped pretrained/learning_curve.json): the
chain's first run is joined to the last run of that file (matched by folder name) at the step it
started from, and the new JSON holds the whole lineage again.

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
TAGS = ("judge_accuracy", "judge_accuracy_heldout", "caption_gain_bits_per_image", "bits_per_dim",
        "order_preference")


def define_flags():
  flags.DEFINE_string("run_dir", None, "the last run of the lineage", required=True)
  flags.DEFINE_list("measured", [], "STEP=CAPTIONS/HELDOUT[@LABEL]: judge accuracies measured "
                    "at cumulative steps (CAPTIONS: the validation or test split's captions; "
                    "say which in the label); points of one label form a series")
  flags.DEFINE_string("measured_label", "evaluate binary, 200 captions x 10 samples",
                      "legend of --measured")
  flags.DEFINE_integer("last_step", None, "end the curve at this step of --run_dir (e.g. the "
                       "step that was shipped; default: the run's last)")
  flags.DEFINE_string("earlier", None, "JSON rows of a previous call whose last run is the "
                      "parent of this lineage's first run (used when that parent is not here)")
  flags.DEFINE_string("out", None, "the picture (.png); the rows go to the same name .json",
                      required=True)


def _abs(path):
  return os.path.abspath(path) if path else None


def lineage(run_dir):
  """[(run_dir, start_step)] from the first run to ``run_dir`` (absolute paths); start_step is
  the parent's checkpoint this run started from (0 for the first). A parent that is gone (e.g.
  the run folder in pretrained/ names a workspace run of another machine) ends the chain there."""
  from text2pixel import layout
  chain, run_dir = [], os.path.abspath(run_dir)
  while run_dir:
    if run_dir in [r for r, _ in chain]:
      raise app.UsageError(f"the lineage of {chain[0][0]} runs in a circle at {run_dir}")
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
      elif _abs(layout.read_run_info(parent).get("init_from")) in [r for r, _ in chain] + [
          run_dir]:
        # The in-progress snapshot in pretrained/ is overwritten by each ship: a run started
        # from an older snapshot names a folder that now holds its own descendant.
        print(f"note: {run_dir} started from {parent}, which now holds a later run of this "
              f"lineage; the curve starts at {run_dir} (--earlier adds what came before)")
        parent = None
    chain.append((run_dir, start))
    run_dir = _abs(parent)
  chain.reverse()
  return chain


def join_earlier(earlier, start):
  """(rows, lineage, measured, starts, step, hours) of an earlier call's JSON cut at the step of
  its last run that the next run started from (``start``), and the cumulative step and hours
  there."""
  rows, names = earlier["rows"], earlier["lineage"]
  last = names[-1]["run"]
  at = [r for r in rows if r["run"] == last and r["run_step"] == start]
  if not at:
    raise app.UsageError(f"--earlier: its last run, {last}, has no validation at step {start}, "
                         "where this lineage's first run started; is it the right file?")
  joint = at[0]
  kept = [r for r in rows if r["run"] != last or r["run_step"] <= start]
  starts = earlier.get("starts")
  if starts is None:  # files written before the starts were recorded: from the rows
    starts = []
    for name in names:
      first = next(r for r in rows if r["run"] == name["run"])
      step = first["step"] - first["run_step"]
      hours = max([r["hours"] for r in rows if r["step"] <= step] or [0.0])
      starts.append((step, hours))
  return kept, names, earlier.get("measured", {}), starts, joint["step"], joint["hours"]


def rows_of(chain, step_offset=None, hours_offset=0.0, last_step=None):
  """(rows, starts): one row per validation of the lineage (cumulative step and hours, run name,
  TAGS), and each run's (first step, hours there) along the lineage. The first run starts at
  ``step_offset`` (default: the step of its parent it started from) and ``hours_offset``."""
  rows, starts = [], []
  if step_offset is None:
    step_offset = chain[0][1]  # a chain cut short starts where its first run did
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
    last = chain[i + 1][1] if i + 1 < len(chain) else (last_step or result["step"])
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
  names = [{"run": os.path.basename(r), "started_at_parent_step": s} for r, s in chain]
  if FLAGS.earlier:
    with open(FLAGS.earlier) as f:
      earlier = json.load(f)
    earlier_rows, earlier_names, earlier_measured, earlier_starts, step0, hours0 = join_earlier(
        earlier, chain[0][1])
    rows, starts = rows_of(chain, step0, hours0, FLAGS.last_step)
    rows, names, starts = earlier_rows + rows, earlier_names + names, earlier_starts + starts
    for label, points in earlier_measured.items():
      for step, value in points.items():
        measured.setdefault(label, {}).setdefault(int(step), tuple(value))
  else:
    rows, starts = rows_of(chain, last_step=FLAGS.last_step)
  marks = [(step, f"{name['run']} ({hours:.1f} h)")
           for name, (step, hours) in zip(names, starts) if name["started_at_parent_step"]]
  series = lambda tag: ([r["step"] for r in rows if tag in r], [r[tag] for r in rows if tag in r])
  judge_series = {"validation captions (in training)": series("judge_accuracy"),
                  "held-out combinations (in training)": series("judge_accuracy_heldout")}
  for label, points in measured.items():
    steps = sorted(points)
    judge_series[f"named captions, {label}"] = (steps, [points[s][0] for s in steps])
    judge_series[f"held-out combinations, {label}"] = (steps, [points[s][1] for s in steps])
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
  ] + ([{"title": "which digit goes where: true over digit-swapped caption (validation, "
                  "two-digit images; 0.5 = blind to the order)", "x_label": x_label,
         "series": {"order preference": series("order_preference")}, "marks": marks,
         "x_range": x_range}] if series("order_preference")[0] else []))
  path = pictures.save(picture, FLAGS.out)
  rows_path = os.path.splitext(FLAGS.out)[0] + ".json"
  with open(rows_path, "w") as f:
    json.dump({"lineage": names, "starts": starts,
               "measured": {label: {str(k): v for k, v in points.items()}
                            for label, points in measured.items()}, "rows": rows}, f, indent=1)
  print(f"wrote {path} and {rows_path}: {len(names)} runs, {rows[-1]['step'] if rows else 0:,} "
        f"steps, {hours:.2f} h")


if __name__ == "__main__":
  define_flags()
  app.run(main)
