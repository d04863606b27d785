"""Guidance away from the ways a two-digit sample fails: does it fix the samples?

  .venv/bin/python experiments/negative_guidance.py --run_dir workspace/runs/neigh30 \
      --strengths 0,1,2 --num_captions 100 --num_samples 4 --out experiments/results/negative_X

The likelihood of the order-trained models prefers the true caption over its digit-swapped
one for 85% of two-digit test images, yet their samples of a pair are right a third of the
time: a sample drifts, pixel by pixel, into drawing one named digit in both places or a digit
the caption does not name (experiments/judge_breakdown.py). This asks whether steering every
pixel away from those captions helps. Each caption y decodes beside the empty caption and its
neighbours y' (the digits swapped, the first digit in both places, the second in both places);
every row of the group takes the pixel drawn from

    l = l_empty + g (l_y - l_empty) + h (l_y - mean_y' l_y')

(g: the run's classifier-free guidance; h: this script's strength; h = 0 is the shipped
sampler). One-digit captions have no neighbours here (their y' rows are y: the h term is 0).
Judged with the trainer's judge probe (its captions and seed), by caption kind. It runs tfa's
step-by-step decoder with a sampler of its own, not the fused op: an experiment, not a sampler.
"""

import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from experiments.judge_breakdown import SPLITS  # noqa: E402
from experiments.rerank import neighbour_captions  # noqa: E402
from experiments.learning_curve import restored_model_and_probe  # noqa: E402
from experiments.runner import write_outputs  # noqa: E402

FLAGS = flags.FLAGS
GROUP = 5  # rows per caption: y, empty, swapped, first digit twice, second digit twice


def define_flags():
  flags.DEFINE_string("run_dir", None, "a training run", required=True)
  flags.DEFINE_integer("step", None, "the checkpoint's step (default: the latest)")
  flags.DEFINE_string("data_dir", "workspace/data/mnist_captions", "its data set")
  flags.DEFINE_float("guidance", None, "classifier-free guidance g (default: the run's)")
  flags.DEFINE_list("strengths", ["0", "1", "2"], "h values to compare")
  flags.DEFINE_integer("num_captions", 100, "validation and held-out captions each")
  flags.DEFINE_integer("num_samples", 4, "samples per caption")
  flags.DEFINE_integer("seed", 0, "sampling seed")
  flags.DEFINE_string("out", None, "output path without extension", required=True)


def neighbour_rows(ids, lengths, digit_ids):
  """[captions, GROUP - 2, length]: each caption's swapped, first-twice and second-twice
  captions (rerank.neighbour_captions' first three), the caption itself in the places of those
  it does not have (one digit word, or the same digit twice)."""
  out = np.repeat(ids[:, None, :], GROUP - 2, axis=1).copy()
  for row in range(len(ids)):
    rows, kinds = neighbour_captions(ids[row], lengths[row], digit_ids)
    few = [r for r, kind in zip(rows, kinds) if kind != "replace"]
    if len(few) == GROUP - 2:
      out[row] = few
  return out


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
  g = config.guidance if FLAGS.guidance is None else FLAGS.guidance
  side, pixels = config.image_side, config.num_pixels

  class GroupSampler(sampling.StatelessSampleEmbeddingSampler):
    """Every row of a group of GROUP takes the pixel drawn from the group's mixed logits."""

    def __init__(self, uniforms, weights):
      super().__init__(model.pixel_input, tf.constant(1.0), uniforms)
      self.weights = weights

    def sample(self, time, outputs, state):
      groups = tf.reshape(tf.cast(outputs, tf.float32), [-1, GROUP, outputs.shape[-1]])
      mixed = tf.einsum("bgl,g->bl", groups, self.weights)
      ids = sampling.inverse_cdf(mixed, self.uniforms[:, time])
      return tf.repeat(ids, GROUP, axis=0)

  @tf.function
  def decode(flat_ids, flat_len, uniforms, weights):
    rows = tf.shape(flat_len)[0]
    annotations = model.encode(flat_ids, flat_len)
    cell, state = model.decoder_initial_state(annotations, flat_len, rows)
    decoder = sampling._BasicDecoder(cell, GroupSampler(uniforms, weights),
                                     output_layer=model.output_layer, maximum_iterations=pixels)
    outputs, _, _ = decoder(None, initial_state=state,
                            start_tokens=tf.fill([rows], sampling.START_SYMBOL),
                            end_token=sampling.START_SYMBOL)
    return outputs.sample_id[::GROUP]

  def generate(ids, lengths, weights):
    n = ids.shape[0] * FLAGS.num_samples
    row_ids = np.repeat(ids, FLAGS.num_samples, axis=0)
    row_len = np.repeat(lengths, FLAGS.num_samples, axis=0)
    empty_ids, empty_len = (t.numpy() for t in text_lib.empty_captions(tf.constant(row_ids)))
    group = np.concatenate([row_ids[:, None], empty_ids[:, None],
                            neighbour_rows(row_ids, row_len, digit_ids)], axis=1)
    group_len = np.concatenate([row_len[:, None], empty_len[:, None],
                                np.repeat(row_len[:, None], GROUP - 2, axis=1)], axis=1)
    ids = decode(tf.constant(group.reshape(-1, group.shape[-1])),
                 tf.constant(group_len.reshape(-1).astype(np.int32)),
                 sampling.seeded_uniforms(n, pixels, FLAGS.seed), tf.constant(weights, tf.float32))
    return ids.numpy().astype(np.uint8).reshape(-1, side, side)

  result = {"checkpoint": path, "step": layout.checkpoint_step(path), "guidance": g,
            "captions_per_split": FLAGS.num_captions, "samples_per_caption": FLAGS.num_samples,
            "seed": FLAGS.seed, "strengths": {}}
  for h in map(float, FLAGS.strengths):
    weights = [g + h, 1.0 - g] + [-h / (GROUP - 2)] * (GROUP - 2)
    rows = {}
    for metric, s in probe.sets.items():
      images = generate(s["ids"].numpy(), s["lengths"].numpy(), weights)
      correct = judge_lib.judge_details(probe.judge, images, s["relations"],
                                        s["digits"])["correct"]
      relations = np.array([judge_lib._relation_str(r) for r in s["relations"]])
      two = np.isin(relations, mnist_captions.TWO_DIGIT)
      rows[SPLITS[metric]] = {"all": float(correct.mean()),
                              "one digit": float(correct[~two].mean()),
                              "two digits": float(correct[two].mean())}
    result["strengths"][f"{h:g}"] = rows
    print(f"h={h:g}", rows, flush=True)

  md = [f"# Guidance away from the failing neighbours: `{path}`", "",
        f"{FLAGS.num_captions} captions per split x {FLAGS.num_samples} samples, g = {g:g}, "
        f"seed {FLAGS.seed}. Share of samples the judge accepts. Command:", "",
        "    .venv/bin/python " + " ".join(sys.argv), "",
        "| h | validation: all | one digit | two digits | held-out: all | one digit | two digits |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for h, rows in result["strengths"].items():
    v, o = rows["validation"], rows["held-out"]
    md.append(f"| {h} | {v['all']:.1%} | {v['one digit']:.1%} | {v['two digits']:.1%} | "
              f"{o['all']:.1%} | {o['one digit']:.1%} | {o['two digits']:.1%} |")
  write_outputs(FLAGS.out, result, md)


if __name__ == "__main__":
  define_flags()
  app.run(main)
