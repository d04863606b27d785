"""The experiment runner behind experiments/mnist_captions.py (Table 2) and experiments/coco.py
(Table 1): build data, train alignPixelRNN and the baselines, evaluate each, and write
experiments/results/<name>.md with the table next to the paper's.

Every step is one of the project's binaries, run as a subprocess; the exact commands go into the
results file. Re-running resumes: a finished data set or training run is reused.

An experiment script calls define_flags(), adopts them (flags.adopt_module_key_flags(runner), so
its --helpshort lists them), then app.run(functools.partial(runner.main, EXPERIMENT)).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time

from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The paper's model where the cpu_small preset departs from it: its BiLSTM encoder (keys and
# values both its states), no attention supervision, no caption dropout, no guidance. The
# tables, the sweep and issue 14's study ran on these; pinning them keeps their commands the
# same experiment whatever the preset becomes.
PAPER_RECIPE = {"encoder": "bilstm", "attention_supervision": 0.0,
                "attention_supervised_pixels": "ink", "caption_dropout": 0.0, "guidance": 1.0}
# The same with the weights as trained (no moving average), as in the paper.
PAPER_AS_TRAINED = {**PAPER_RECIPE, "ema_decay": 0.0}
# name -> config overrides (the paper's alignDRAW vs noalignDRAW comparison).
MODELS = {
    "alignPixelRNN": {**PAPER_AS_TRAINED},
    "noalign (mean of encoder states)": {**PAPER_AS_TRAINED, "conditioning": "mean"},
    "unconditional pixel LSTM": {**PAPER_AS_TRAINED, "conditioning": "none"},
}
FLAGS = flags.FLAGS


def printable(cmd):
  """The command as the results files record it: quoted, with the repo's venv python."""
  return " ".join(shlex.quote(c) for c in cmd).replace(sys.executable, ".venv/bin/python")


def run(cmd, log_path=None, cwd=REPO):
  shown = " ".join(shlex.quote(c) for c in cmd)
  print(f"$ {shown}", flush=True)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
  with open(log_path, "a") if log_path else open(os.devnull, "w") as log:
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
      print("   " + line, end="", flush=True)
      log.write(line)
    if proc.wait():
      raise SystemExit(f"command failed ({proc.returncode}): {shown}")
  return printable(cmd)


def chosen_variants(requested, variants, data_dir):
  """The --variants a sweep was asked for, checked: each known, and the data set built."""
  names = [n for n in requested if n]
  unknown = [n for n in names if n not in variants]
  if unknown:
    raise SystemExit(f"unknown variant(s) {unknown}; known: {list(variants)}")
  if not os.path.exists(os.path.join(REPO, data_dir, "metadata.json")):
    raise SystemExit(f"no data in {data_dir}: build it first (scripts/main.sh does)")
  return names


def write_outputs(out, result, lines):
  """<out>.json (``result``) and <out>.md (markdown ``lines``, also printed) for an experiment
  whose --out names where its outputs go."""
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out + ".json", "w") as f:
    json.dump(result, f, indent=1)
  with open(out + ".md", "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))
  print(f"wrote {out}.json and {out}.md", flush=True)


def write_result(filename, lines):
  """experiments/results/<filename> from markdown lines, echoed to the console."""
  out = os.path.join(REPO, "experiments", "results", filename)
  with open(out, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))
  print(f"written: {os.path.relpath(out, REPO)}")


def check_not_stale(run_dir, preset, overrides):
  """Stops if run_dir holds a run of another model or setup than the preset with overrides.

  Scripts reuse finished runs; without this a changed preset would silently report a run
  trained with the old one.
  """
  from text2pixel import config as config_lib
  path = os.path.join(run_dir, "config.json")
  if not os.path.exists(path):
    return
  wanted = config_lib.get_preset(preset).replace(**overrides)
  differences = {k: v for k, v in config_lib.load(path).differences(wanted).items()
                 if k not in config_lib.RESUMABLE_CHANGES}
  if differences:
    raise SystemExit(f"{run_dir} was trained with another config than this script asks for "
                     f"(field: (saved, asked) {differences}); move it aside or delete it")


def finished(run_dir, minutes):
  path = os.path.join(run_dir, "train_result.json")
  if not os.path.exists(path):
    return False
  with open(path) as f:
    return json.load(f)["minutes"] >= minutes * 0.99


class Experiment:
  """What differs between the tables: the data set, how to build it, the paper's rows."""

  def __init__(self, dataset, build_command, paper_rows, sample_captions, description):
    self.dataset = dataset              # name of the folder under workspace/data
    self.build_command = build_command  # (python, data_dir) -> argv list, or None if prebuilt
    self.paper_rows = paper_rows        # rows for metrics.format_table
    self.sample_captions = sample_captions
    self.description = description


def define_flags():
  """The flags every experiment script takes. Called by the script run as the program only:
  other experiments import this module and define some of these names themselves (--minutes),
  and absl refuses a name defined twice."""
  flags.DEFINE_string("scale", "cpu_small", "config preset: cpu_small | paper")
  flags.DEFINE_float("minutes", 30.0, "training time per model")
  flags.DEFINE_list("models", ["all"], "model keys, or 'all'")
  flags.DEFINE_integer("num_captions", 1000, "retrieval: test captions")
  flags.DEFINE_integer("pool", 1000, "retrieval: test images each caption ranks")
  flags.DEFINE_integer("ssim_captions", 200, "SSIM: test captions")
  flags.DEFINE_integer("ssim_samples", 50, "SSIM: samples per caption")
  flags.DEFINE_string("workspace", "workspace", "where data, runs, evaluations and logs go")
  flags.DEFINE_boolean("report_only", False,
                       "only rewrite the results file from the evaluations on disk")


def main(experiment: Experiment, argv=None):
  del argv

  py = sys.executable
  name = f"{experiment.dataset}_{FLAGS.scale}"
  data = os.path.join(FLAGS.workspace, "data", experiment.dataset)
  results_dir = os.path.join(REPO, "experiments", "results")
  files_dir = os.path.join(results_dir, name + "_files")
  log_path = os.path.join(FLAGS.workspace, f"{name}.log")
  os.makedirs(FLAGS.workspace, exist_ok=True)
  started = time.time()
  commands = []
  build = experiment.build_command(py, data)
  if build and not FLAGS.report_only:
    commands.append(run(build, log_path))

  chosen = list(MODELS) if FLAGS.models == ["all"] else FLAGS.models
  if FLAGS.report_only:
    chosen = []
  for model in chosen:
    slug = model.split(" ")[0].lower()
    run_dir = os.path.join(FLAGS.workspace, "runs", f"{name}_{slug}")
    eval_dir = os.path.join(FLAGS.workspace, "eval", f"{name}_{slug}")
    # An evaluation is redone when asked again (its score matrices resume from disk).
    overrides = [f"--{k}={v}" for k, v in MODELS[model].items()]
    train_cmd = [py, "-m", "text2pixel.binaries.train", "--preset", FLAGS.scale, "--data_dir", data,
                 "--run_dir", run_dir, "--max_train_minutes", str(FLAGS.minutes),
                 # time is the budget every model gets alike, not the preset's step count
                 "--train_steps", "1000000", *overrides]
    check_not_stale(run_dir, FLAGS.scale, MODELS[model])
    if finished(run_dir, FLAGS.minutes):  # resumable at the script level too
      commands.append(printable(train_cmd))
      print(f"{run_dir} already trained for {FLAGS.minutes} min; not training again")
    else:
      commands.append(run(train_cmd, log_path))
    commands.append(run([py, "-m", "text2pixel.binaries.evaluate", "--run_dir", run_dir,
                         "--data_dir", data, "--out_dir", eval_dir,
                         "--num_captions", str(FLAGS.num_captions), "--pool", str(FLAGS.pool),
                         "--ssim_captions", str(FLAGS.ssim_captions),
                         "--ssim_samples", str(FLAGS.ssim_samples), "--model_name", model],
                        log_path))
    # The evaluation keeps the training summary it belongs to (run dirs are large and may go).
    shutil.copy(os.path.join(run_dir, "train_result.json"),
                os.path.join(eval_dir, "train_result.json"))
    os.makedirs(files_dir, exist_ok=True)
    shutil.copy(os.path.join(eval_dir, "samples.png"), os.path.join(files_dir, f"{slug}_samples.png"))
    if MODELS[model].get("conditioning", "attention") == "attention":
      sample_dir = os.path.join(FLAGS.workspace, "samples", name)
      commands.append(run([py, "-m", "text2pixel.binaries.sample", "--run_dir", run_dir,
                           "--out_dir", sample_dir, "--num_samples", "8",
                           "--captions", ";".join(experiment.sample_captions)], log_path))
      shutil.copy(os.path.join(sample_dir, "sample_grid.png"),
                  os.path.join(files_dir, "caption_samples.png"))
      for i in range(len(experiment.sample_captions)):
        shutil.copy(os.path.join(sample_dir, f"attention_{i:03d}.png"),
                    os.path.join(files_dir, f"attention_{i:03d}.png"))
  details = {}
  for model in MODELS:
    slug = model.split(" ")[0].lower()
    run_dir = os.path.join(FLAGS.workspace, "runs", f"{name}_{slug}")
    eval_dir = os.path.join(FLAGS.workspace, "eval", f"{name}_{slug}")
    if not os.path.exists(os.path.join(eval_dir, "results.json")):
      continue
    with open(os.path.join(eval_dir, "results.json")) as f:
      result = json.load(f)
    training = os.path.join(eval_dir, "train_result.json")
    if not os.path.exists(training):
      training = os.path.join(run_dir, "train_result.json")
    with open(training) as f:
      result["training"] = json.load(f)
    details[model] = result
  if not details:
    raise SystemExit(f"no model of {name} has been evaluated yet (in {FLAGS.workspace}/eval); "
                     "run without --report_only")
  # The table shows every model evaluated so far, so models can be run one session at a time.
  os.makedirs(files_dir, exist_ok=True)
  commands_path = os.path.join(files_dir, "commands.json")
  if os.path.exists(commands_path):
    with open(commands_path) as f:
      commands = [c for c in json.load(f) if c not in commands] + commands
  with open(commands_path, "w") as f:
    json.dump(commands, f, indent=1)
  write_markdown(os.path.join(results_dir, name + ".md"), name, FLAGS, details, commands,
                 (time.time() - started) / 60, experiment)
  print(f"wrote experiments/results/{name}.md")


def write_markdown(path, name, args, details, commands, minutes, experiment):
  sys.path.insert(0, REPO)
  from text2pixel import metrics
  table_rows = list(experiment.paper_rows)
  for model, r in details.items():
    for key, label in (("log p(x|y)", "log p(x\\|y)"),
                       ("log p(x|y) - log p(x|empty)", "log p(x\\|y) − log p(x\\|∅)")):
      ret = r["retrieval"][key]
      row = {"Model": f"{model}, ranked by {label}", "Med r": ret["median_rank"],
             **{f"R@{k}": v for k, v in ret["recall"].items()}}
      if key == "log p(x|y)":
        row["SSI"] = (r["ssim"]["mean"], r["ssim"]["std"])
      table_rows.append(row)
  lines = [f"# {name}: {experiment.description} at `{args.scale}` scale, on this machine", "",
           metrics.format_table(table_rows), "",
           "| model | training | steps | test bits/dim | judge: test captions | judge: held-out "
           "captions |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
  for model, r in details.items():
    judge = r.get("judge", {})
    fmt = lambda k: f"{100 * judge[k]['accuracy']:.1f}%" if k in judge else "–"
    lines.append(f"| {model} | {r['training']['minutes']:.1f} min | {r['training']['step']} | "
                 f"{r['bits_per_dim']['bits_per_dim']:.4f} | {fmt('test')} | {fmt('heldout')} |")
  any_result = next(iter(details.values()))
  lines += ["", f"Retrieval: {any_result['retrieval']['captions']} test captions, each ranking a "
            f"pool of {any_result['retrieval']['pool']} test images; SSIM: "
            f"{any_result['ssim']['captions']} captions × {any_result['ssim']['samples_per_caption']}"
            f" samples at temperature {any_result['ssim']['temperature']} "
            f"(tf.image.ssim {json.dumps(any_result['ssim']['settings'])}).",
            "Training time per model is in the second table; evaluation took "
            + ", ".join(f"{r['minutes']:.1f} min ({m})" for m, r in details.items()) + ".", "",
            "Chance level for this pool (a model that ignores the caption): "
            + ", ".join(f"R@{k} {100 * min(k, any_result['retrieval']['pool']) / any_result['retrieval']['pool']:.1f}"
                        for k in (1, 5, 10, 50))
            + f", median rank {(any_result['retrieval']['pool'] + 1) / 2:g}.", ""]
  notes = os.path.join(os.path.dirname(path), name + ".notes.md")
  if os.path.exists(notes):  # the hand-written reading of the numbers, kept across reruns
    with open(notes, encoding="utf-8") as f:
      lines += ["## The gap to the paper", "", f.read().strip(), ""]
  lines += [
            "## Samples", "", "![caption samples](" + name + "_files/caption_samples.png)", ""]
  for i, caption in enumerate(experiment.sample_captions):
    lines += [f"Attention for \"{caption}\":", "",
              f"![attention]({name}_files/attention_{i:03d}.png)", ""]
  for model in details:
    slug = model.split(" ")[0].lower()
    lines += [f"Test captions, {model} (left: the data; then samples):", "",
              f"![{slug}]({name}_files/{slug}_samples.png)", ""]
  lines += ["## Commands", "", "```"] + commands + ["```", "", "## Config", "", "```json",
                                                    json.dumps(any_result["config"], indent=1),
                                                    "```", ""]
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines))

