"""Does the model's likelihood know which digit goes where? For every test image of two different
digits, compare log p(image | its caption) with log p(image | the same caption with the two digits
swapped) ("the digit 3 is on the left of the digit 5" against "... 5 ... 3"). A model that knows
the order prefers the true caption; one that only knows which digits are present is at 50%.

  .venv/bin/python experiments/order_probe.py --run_dir workspace/runs/embed_cfg \
      --out experiments/results/order_probe_embed_cfg

Scoring only (no sampling): exact log-likelihoods, a few hundred pairs per split, a minute or two.
Writes <out>.json and <out>.md: per split and relation, the share of images whose true caption
scores higher, and the mean margin in nats per image.
"""

import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from experiments.learning_curve import checkpoint_path  # noqa: E402
from experiments.rerank import log_likelihoods  # noqa: E402
from experiments.runner import write_outputs  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("run_dir", None, "a training run", required=True)
  flags.DEFINE_integer("step", None, "the checkpoint's step (default: the latest)")
  flags.DEFINE_string("data_dir", "workspace/data/mnist_captions", "its data set")
  flags.DEFINE_list("splits", ["test", "heldout"], "data splits to probe")
  flags.DEFINE_integer("limit", 1000, "examples read per split (about half name two digits)")
  flags.DEFINE_integer("pairs_per_batch", 256, "images scored per step")
  flags.DEFINE_boolean("raw_weights", False, "the weights as trained, not their moving average "
                       "(which lags about 1/(1-ema_decay) steps behind)")
  flags.DEFINE_string("out", None, "output path without extension", required=True)


def main(argv):
  del argv
  from text2pixel.threads import configure_threads
  configure_threads(1, 0)
  import tensorflow as tf
  from datasets import mnist_captions
  from text2pixel import judge as judge_lib, layout, model as model_lib, text as text_lib
  from text2pixel import tfrecords, training

  config, vocab, _ = layout.load_run_config(FLAGS.run_dir)
  model = model_lib.build(config, len(vocab))
  path = checkpoint_path(FLAGS.run_dir, FLAGS.step)
  training.restore_model(model, config, path, average=not FLAGS.raw_weights)
  digit_ids = list(training.digit_word_ids(vocab).values())
  result = {"checkpoint": path, "step": layout.checkpoint_step(path),
            "weights": "raw" if FLAGS.raw_weights else "average where kept", "splits": {}}
  for split in FLAGS.splits:
    data = tfrecords.load_split(FLAGS.data_dir, split, config.image_side, limit=FLAGS.limit)
    relations = np.array([judge_lib._relation_str(r) for r in data["relation"]])
    keep = [i for i, (r, d) in enumerate(zip(relations, data["digits"]))
            if r in mnist_captions.TWO_DIGIT and len(d) == 2 and d[0] != d[1]
            and len(data["caption_ids"][i]) <= config.max_caption_len]
    true_ids = tfrecords.pad_ids([data["caption_ids"][i] for i in keep], config.max_caption_len)
    swap_ids, eligible = (t.numpy() for t in text_lib.swap_two_words(tf.constant(true_ids),
                                                                      digit_ids))
    assert eligible.all()  # each kept caption names two different digits
    lengths = np.array([len(data["caption_ids"][i]) for i in keep], np.int32)
    images = data["image"][keep]
    margin = (log_likelihoods(model, true_ids, lengths, images, FLAGS.pairs_per_batch)
              - log_likelihoods(model, swap_ids, lengths, images, FLAGS.pairs_per_batch))
    rows = {"all": np.ones(len(keep), bool),
            **{r: relations[keep] == r for r in mnist_captions.TWO_DIGIT}}
    result["splits"][split] = {
        name: {"images": int(m.sum()), "true_caption_preferred": float((margin[m] > 0).mean()),
               "mean_margin_nats": float(margin[m].mean()),
               "mean_abs_margin_nats": float(np.abs(margin[m]).mean())}
        for name, m in rows.items() if m.any()}
    print(split, result["splits"][split]["all"], flush=True)
  md = [f"# Which digit goes where, by the model's likelihood: `{path}`", "",
        "Two-digit images (different digits) of each split: share whose true caption scores "
        "higher than the caption with the two digits swapped, and the mean of log p(x|true) − "
        "log p(x|swapped) and of its size, in nats per image (a model blind to the order: 50%, "
        "0). On held-out images the swapped caption is a training combination. Command:", "",
        "    .venv/bin/python " + " ".join(sys.argv), "",
        "| split | relation | images | true caption preferred | mean margin (nats) | "
        "mean abs. margin |", "| --- | --- | ---: | ---: | ---: | ---: |"]
  for split, rows in result["splits"].items():
    for name, r in rows.items():
      md.append(f"| {split} | {name} | {r['images']} | {r['true_caption_preferred']:.1%} | "
                f"{r['mean_margin_nats']:.2f} | {r['mean_abs_margin_nats']:.2f} |")
  write_outputs(FLAGS.out, result, md)


if __name__ == "__main__":
  define_flags()
  app.run(main)
