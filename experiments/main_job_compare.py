"""The README's main job, before and after: the same 30-minute `cpu_small` training on another
commit's code (a git worktree) and on this tree's, one after the other on this machine, each
exported and judged by this tree's evaluate binary on the same test data.

  .venv/bin/python experiments/main_job_compare.py --before 816ccc7 --minutes 30 \
      --out experiments/results/main_job_before_after

Each tree runs the main job's own steps (scripts/main.sh 1-2: build its data set, train the
`cpu_small` preset of that commit for --minutes), then its own export binary; this tree's
evaluate binary then scores both exports the same way (the main job's step 4 sizes: retrieval
100 captions x pool 100, 100 captions x 10 samples per split for SSIM and the digit judge).
Steps/s, bits/dim and caption gain are what each run's own train_result.json says.

Machines here differ by up to 2x from day to day, so only the two runs of one call compare.
Resumable: each label's folder is named by its commit; a run whose time bound is used up is
reopened by the trainer (which stops at once), an export and an evaluation on disk are reused.
Nothing else should run meanwhile (pause a long training with SIGTERM).
"""

import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import commit_label, worktree  # noqa: E402
from experiments import runner  # noqa: E402

FLAGS = flags.FLAGS
LABELS = ("before", "after")


def define_flags():
  flags.DEFINE_string("before", "816ccc7", "the 'before' commit (default: main when issue 14 "
                      "was filed, 2026-11-26)")
  flags.DEFINE_float("minutes", 30.0, "training time of each run (the main job's TRAIN_MINUTES)")
  flags.DEFINE_string("work_dir", "workspace/main_job_compare", "data, runs, exports, evaluations")
  flags.DEFINE_integer("num_captions", 100, "retrieval: test captions")
  flags.DEFINE_integer("pool", 100, "retrieval: test images each caption ranks")
  flags.DEFINE_integer("judge_captions", 100, "SSIM and judge: captions per split")
  flags.DEFINE_integer("judge_samples", 10, "SSIM and judge: samples per caption")
  flags.DEFINE_string("out", None, "results path without extension (.md and .json)",
                      required=True)


def train_and_export(root, paths, log):
  """The main job's data and training steps with the tree at ``root``, then its export."""
  py = sys.executable
  commands = [runner.run([py, "-m", "datasets.mnist_captions", "--out_dir", paths["data"]],
                         log, cwd=root)]
  commands.append(runner.run([py, "-m", "text2pixel.binaries.train", "--preset", "cpu_small",
                              "--data_dir", paths["data"], "--run_dir", paths["run"],
                              "--max_train_minutes", str(FLAGS.minutes)], log, cwd=root))
  if not os.path.exists(os.path.join(paths["export"], "saved_model.pb")):
    commands.append(runner.run([py, "-m", "text2pixel.binaries.export", "--run_dir", paths["run"],
                                "--export_dir", paths["export"]], log, cwd=root))
  return commands


def evaluate(paths, data_dir, label, log):
  """This tree's evaluate binary on an export; returns its results.json."""
  results = os.path.join(paths["eval"], "results.json")
  command = [sys.executable, "-m", "text2pixel.binaries.evaluate", "--saved_model",
             paths["export"], "--data_dir", data_dir, "--out_dir", paths["eval"],
             "--num_captions", str(FLAGS.num_captions), "--pool", str(FLAGS.pool),
             "--ssim_captions", str(FLAGS.judge_captions),
             "--ssim_samples", str(FLAGS.judge_samples), "--model_name", f"main job, {label}"]
  if os.path.exists(results):
    printed = runner.printable(command)
  else:
    printed = runner.run(command, log)
  with open(results) as f:
    return json.load(f), printed


def pairs_share(judge_split):
  """Accuracy over the two-digit relations (the rest name one digit at a place of the image)."""
  per = judge_split["per_relation"]
  pairs = [per[r] for r in ("left", "right", "top", "bottom") if r in per]
  count = sum(p["count"] for p in pairs)
  return sum(p["accuracy"] * p["count"] for p in pairs) / count if count else float("nan")


def main(argv):
  del argv
  work = os.path.abspath(FLAGS.work_dir)
  os.makedirs(work, exist_ok=True)
  log = os.path.join(work, "log.txt")
  roots = {"before": worktree(FLAGS.before), "after": runner.REPO}
  commits = {label: commit_label(roots[label]) for label in LABELS}
  # One folder per label and commit: a rerun on other code trains anew instead of reporting
  # an old run under the new commit's name.
  paths = {label: {k: os.path.join(work, f"{label}_{commits[label]}", k)
                   for k in ("data", "run", "export", "eval")} for label in LABELS}
  commands = {}
  for label in LABELS:
    print(f"== {label}: {commits[label]} ({roots[label]})", flush=True)
    python = os.path.join(runner.REPO, ".venv", "bin", "python")  # the worktree has no .venv
    commands[label] = [f"(cd {roots[label]} && {c.replace('.venv/bin/python', python, 1)})"
                       if label == "before" else c
                       for c in train_and_export(roots[label], paths[label], log)]
  rows = {}
  for label in LABELS:
    # Both exports judged on the 'after' tree's test split: same captions, same seeds.
    results, printed = evaluate(paths[label], paths["after"]["data"], label, log)
    commands[label].append(printed)
    with open(os.path.join(paths[label]["run"], "train_result.json")) as f:
      trained = json.load(f)
    judge = results["judge"]
    rows[label] = {
        "commit": commits[label], "steps": trained["step"], "minutes": trained["minutes"],
        "steps_per_sec": trained["step"] / (60 * trained["minutes"]),
        "validation_bits_per_dim": trained["validation_bits_per_dim"],
        "caption_gain_bits_per_image": trained["caption_gain_bits_per_image"],
        "judge_test": judge["test"]["accuracy"], "judge_heldout": judge["heldout"]["accuracy"],
        "pairs_test": pairs_share(judge["test"]), "pairs_heldout": pairs_share(judge["heldout"]),
        "judge_samples": judge["test"]["count"], "test_bits_per_dim": results["bits_per_dim"],
        "retrieval": results["retrieval"], "commands": commands[label]}
  lines = [f"# The main job's {FLAGS.minutes:g}-minute run, before and after", "",
           "Same machine, one call, one run after the other (`cpu_small` preset of each commit; "
           "judge: this tree's evaluate binary on each run's export, "
           f"{FLAGS.judge_captions} captions x {FLAGS.judge_samples} samples per split, "
           "temperature 1, the export's own guidance).", "",
           "| | commit | steps | steps/s | validation bits/dim | caption gain (bits/image) "
           "| judge, test | judge, held-out | two-digit captions, test / held-out |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for label in LABELS:
    r = rows[label]
    lines.append(f"| {label} | {r['commit']} | {r['steps']:,} | {r['steps_per_sec']:.2f} | "
                 f"{r['validation_bits_per_dim']:.3f} | {r['caption_gain_bits_per_image']:.1f} | "
                 f"{100 * r['judge_test']:.1f}% | {100 * r['judge_heldout']:.1f}% | "
                 f"{100 * r['pairs_test']:.1f}% / {100 * r['pairs_heldout']:.1f}% |")
  lines += ["", "Commands:", "", "    .venv/bin/python experiments/main_job_compare.py "
            f"--before {FLAGS.before} --minutes {FLAGS.minutes:g} --out {FLAGS.out}", ""]
  for label in LABELS:
    lines += [f"{label}:", ""] + [f"    {c}" for c in rows[label]["commands"]] + [""]
  runner.write_outputs(FLAGS.out, rows, lines)


if __name__ == "__main__":
  define_flags()
  app.run(main)
