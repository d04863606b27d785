"""Can the model pick its own best sample? Draw K samples per caption, score each by the model's
caption-normalised log-likelihood log p(x|y) - log p(x|empty) (the retrieval score that ranks the
right image first 30% of the time at pool 100 for the model it was written for, 69% for the
model shipped since 2026-11-27), keep the best, and judge.

  .venv/bin/python experiments/rerank.py --run_dir workspace/runs/cfg_dropout_0.1 --step 3564 \
      --guidance 2 --num_captions 100 --num_samples 8 --out experiments/results/rerank_X

The judge's fixed captions and seed (as experiments/guidance.py). For k = 1, 2, 4, ... K, using
the first k samples of each caption: the share of captions whose best-scored sample the judge
accepts, by the caption-normalised score and by log p(x|y) alone, beside the share with any
accepted sample among the k (what a perfect picker would reach) and the plain per-sample rate.
Split into one-digit and two-digit captions. Nothing here is used to train or to pick weights.

Two more scores ask the model which caption the sample is *for*: the log posterior of the
caption among captions that differ from it only in their digit words, under a uniform prior,
log p(x|y) - logsumexp_{y'} log p(x|y'). "Posterior, swaps" takes y' from {y, y with its two
digits swapped, y with its first digit in both places, with its second in both places} (two-
digit captions only; one-digit ones keep log p(x|y)); "posterior, neighbours" takes y' from y
and every caption with one digit word replaced by another digit (10 for one digit, 19 for two,
plus the swap): a sample of "3 left of 5" that shows a 3 left of an 8, or two 3s, or a 5 left
of a 3, is more probable under one of those than under its own caption.
"""

import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from experiments.judge_breakdown import SPLITS  # noqa: E402
from experiments.learning_curve import restored_model_and_probe  # noqa: E402
from experiments.runner import write_outputs  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("run_dir", None, "a training run", required=True)
  flags.DEFINE_integer("step", None, "the checkpoint's step (default: the latest)")
  flags.DEFINE_string("data_dir", "workspace/data/mnist_captions", "its data set")
  flags.DEFINE_float("guidance", None, "sampling guidance scale (default: the run's)")
  flags.DEFINE_integer("num_captions", 100, "validation and held-out captions each")
  flags.DEFINE_integer("num_samples", 8, "K: samples per caption")
  flags.DEFINE_integer("seed", 0, "sampling seed")
  flags.DEFINE_integer("pairs_per_batch", 256, "images scored per step")
  flags.DEFINE_string("out", None, "output path without extension", required=True)


def log_likelihoods(model, ids, lengths, images, batch):
  """log p(image i | caption i) in nats for aligned rows, in batches."""
  import tensorflow as tf
  out = []
  for start in range(0, len(images), batch):
    end = start + batch
    out.append(model.log_likelihood(tf.constant(ids[start:end]), tf.constant(lengths[start:end]),
                                    tf.constant(images[start:end])).numpy())
  return np.concatenate(out)


def neighbour_captions(ids, length, digit_ids):
  """The captions that differ from ``ids`` (padded, one row) only in their digit words: ([rows of
  ids], [kind per row]) with kind "swap", "repeat" (one named digit in both places) or "replace"
  (one digit word replaced by another digit)."""
  positions = [i for i in range(length) if ids[i] in digit_ids]
  rows, kinds = [], []
  def add(row, kind):
    if not any(np.array_equal(row, r) for r in rows) and not np.array_equal(row, ids):
      rows.append(row)
      kinds.append(kind)
  if len(positions) == 2:
    a, b = positions
    swapped = ids.copy()
    swapped[a], swapped[b] = ids[b], ids[a]
    add(swapped, "swap")
    for src in (a, b):
      repeated = ids.copy()
      repeated[a] = repeated[b] = ids[src]
      add(repeated, "repeat")
  for p in positions:
    for d in digit_ids:
      replaced = ids.copy()
      replaced[p] = d
      add(replaced, "replace")
  return rows, kinds


def caption_posteriors(model, ids, lengths, images, conditional, digit_ids, batch):
  """Per sample row: (log posterior of its caption among its swap/repeat alternatives, among all
  its neighbour captions), in nats. A caption without swap/repeat alternatives (one digit)
  keeps log p(x|y) as its first score."""
  alt_ids, alt_rows, alt_kinds = [], [], []
  for row in range(len(ids)):
    rows, kinds = neighbour_captions(ids[row], lengths[row], digit_ids)
    alt_ids += rows
    alt_rows += [row] * len(rows)
    alt_kinds += kinds
  alt_rows, alt_kinds = np.array(alt_rows), np.array(alt_kinds)
  print(f"scoring {len(alt_rows)} (sample, neighbour caption) pairs", flush=True)
  alt_ll = log_likelihoods(model, np.stack(alt_ids), lengths[alt_rows], images[alt_rows], batch)
  swaps, neighbours = conditional.copy(), np.zeros_like(conditional)
  for row in range(len(ids)):
    mine = alt_rows == row
    every = np.concatenate([[conditional[row]], alt_ll[mine]])
    neighbours[row] = conditional[row] - np.logaddexp.reduce(every)
    few = np.concatenate([[conditional[row]], alt_ll[mine & (alt_kinds != "replace")]])
    if len(few) > 1:
      swaps[row] = conditional[row] - np.logaddexp.reduce(few)
  return swaps, neighbours


def pick_rates(correct, score, ks):
  """correct, score: [captions, K]. {k: share of captions whose best-scored of the first k
  samples is correct}."""
  return {k: float(np.mean(correct[np.arange(len(correct)), np.argmax(score[:, :k], axis=1)]))
          for k in ks}


def main(argv):
  del argv
  from text2pixel.threads import configure_threads
  configure_threads(1, 0)
  import tensorflow as tf
  from datasets import mnist_captions
  from text2pixel import judge as judge_lib, layout, sampling, text as text_lib

  config, model, probe, path, digit_ids = restored_model_and_probe(
      FLAGS.run_dir, FLAGS.data_dir, FLAGS.step, FLAGS.num_captions, FLAGS.num_samples,
      FLAGS.seed)
  guidance = config.guidance if FLAGS.guidance is None else FLAGS.guidance
  sampler = sampling.make_generate_fn(model, "sample", FLAGS.num_samples, guidance=guidance)
  ks = [k for k in (1, 2, 4, 8, 16, 32) if k <= FLAGS.num_samples]
  result = {"checkpoint": path, "step": layout.checkpoint_step(path), "guidance": guidance,
            "captions_per_split": FLAGS.num_captions, "samples_per_caption": FLAGS.num_samples,
            "seed": FLAGS.seed, "splits": {}}
  for metric, images in probe.samples(sampler).items():
    s, K = probe.sets[metric], FLAGS.num_samples
    correct = judge_lib.judge_details(probe.judge, images, s["relations"],
                                      s["digits"])["correct"].reshape(-1, K)
    ids = np.repeat(s["ids"].numpy(), K, axis=0)
    lengths = np.repeat(s["lengths"].numpy(), K, axis=0)
    empty_ids, empty_lengths = (t.numpy() for t in text_lib.empty_captions(tf.constant(ids)))
    conditional = log_likelihoods(model, ids, lengths, images, FLAGS.pairs_per_batch)
    unconditional = log_likelihoods(model, empty_ids, empty_lengths, images,
                                    FLAGS.pairs_per_batch)
    swaps, neighbours = (x.reshape(-1, K) for x in caption_posteriors(
        model, ids, lengths, images, conditional, digit_ids, FLAGS.pairs_per_batch))
    normalised = (conditional - unconditional).reshape(-1, K)
    conditional = conditional.reshape(-1, K)
    relations = [judge_lib._relation_str(r) for r in s["relations"][::K]]
    two_digits = np.isin(relations, mnist_captions.TWO_DIGIT)
    split = {}
    for group, rows in (("all", slice(None)), ("one digit", ~two_digits),
                        ("two digits", two_digits)):
      c = correct[rows]
      split[group] = {
          "captions": int(len(c)), "per_sample": float(c.mean()),
          "best_by_normalised": pick_rates(c, normalised[rows], ks),
          "best_by_log_p": pick_rates(c, conditional[rows], ks),
          "best_by_posterior_swaps": pick_rates(c, swaps[rows], ks),
          "best_by_posterior_neighbours": pick_rates(c, neighbours[rows], ks),
          "any_of_k": {k: float(c[:, :k].any(axis=1).mean()) for k in ks}}
    result["splits"][SPLITS[metric]] = split
    print(SPLITS[metric], split["all"], flush=True)

  md = [f"# Best of K samples by the model's own score: `{path}`", "",
        f"{FLAGS.num_captions} captions per split x {FLAGS.num_samples} samples, guidance "
        f"{guidance:g}, temperature 1, seed {FLAGS.seed}. Share of captions whose kept sample "
        "the judge accepts. Command:", "", "    .venv/bin/python " + " ".join(sys.argv), "",
        "| split | captions | k | one sample (per-sample rate) | best of k by log p(x\\|y) − "
        "log p(x\\|∅) | best of k by log p(x\\|y) | by posterior, swaps | by posterior, "
        "neighbours | any of k right |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for split_name, split in result["splits"].items():
    for group, g in split.items():
      for k in ks:
        md.append(f"| {split_name} | {group} ({g['captions']}) | {k} | {g['per_sample']:.1%} | "
                  f"{g['best_by_normalised'][k]:.1%} | {g['best_by_log_p'][k]:.1%} | "
                  f"{g['best_by_posterior_swaps'][k]:.1%} | "
                  f"{g['best_by_posterior_neighbours'][k]:.1%} | {g['any_of_k'][k]:.1%} |")
  write_outputs(FLAGS.out, result, md)


if __name__ == "__main__":
  define_flags()
  app.run(main)
