"""The one TFRecord schema every dataset is written in, sharded writing, and the tf.data reader.

An example is one (image, caption) pair:
  image        bytes  32*32 uint8, raster order
  image_side   int64  32 (checked on read: a record of another size is an error)
  caption_ids  int64  token ids ending in <eos>
  caption      bytes  the caption as tokenized/cleaned (what the ids encode)
  raw_caption  bytes  the caption as the source gave it
  source_id    bytes  where the image came from (e.g. "mnist-test-17+mnist-test-4", "coco-391895")
  digits       int64  MNIST only: the digits named, in caption order
  relation     bytes  MNIST only: left | right | top | bottom | top_left | ... (empty otherwise)
  boxes        int64  MNIST only: per digit (row0, col0, row1, col1) on the 32x32 image
"""

from __future__ import annotations

import os
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from text2pixel import atomic
from text2pixel import text as text_lib
from text2pixel.errors import DataError
from text2pixel.layout import split_files

STORED_SIDE = 32


def _bytes(values: Sequence[bytes]) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _ints(values: Sequence[int]) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def make_example(image: np.ndarray, caption_ids: Sequence[int], caption: str, raw_caption: str,
                 source_id: str, digits: Sequence[int] = (), relation: str = "",
                 boxes: Sequence[Sequence[int]] = ()) -> bytes:
  image = np.asarray(image)
  if image.shape != (STORED_SIDE, STORED_SIDE) or image.dtype != np.uint8:
    raise ValueError(f"image must be {STORED_SIDE}x{STORED_SIDE} uint8, got "
                     f"{image.shape} {image.dtype}")
  feature = {
      "image": _bytes([image.tobytes()]),
      "image_side": _ints([STORED_SIDE]),
      "caption_ids": _ints(caption_ids),
      "caption": _bytes([caption.encode("utf-8")]),
      "raw_caption": _bytes([raw_caption.encode("utf-8")]),
      "source_id": _bytes([source_id.encode("utf-8")]),
      "digits": _ints(digits),
      "relation": _bytes([relation.encode("utf-8")]),
      "boxes": _ints([v for box in boxes for v in box]),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "image_side": tf.io.FixedLenFeature([], tf.int64),
    "caption_ids": tf.io.VarLenFeature(tf.int64),
    "caption": tf.io.FixedLenFeature([], tf.string),
    "raw_caption": tf.io.FixedLenFeature([], tf.string),
    "source_id": tf.io.FixedLenFeature([], tf.string),
    "digits": tf.io.VarLenFeature(tf.int64),
    "relation": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "boxes": tf.io.VarLenFeature(tf.int64),
}


# --- writing ------------------------------------------------------------------------------------

def shard_paths(directory: str, split: str, num_shards: int) -> List[str]:
  return [os.path.join(directory, f"{split}.tfrecord-{i:05d}-of-{num_shards:05d}")
          for i in range(num_shards)]


def write_shard(path: str, serialized_examples: Iterator[bytes]) -> int:
  """Writes one shard atomically (temp file, then rename): a shard that exists is complete."""
  count = 0
  with atomic.writing(path, ".incomplete") as temp, tf.io.TFRecordWriter(temp) as writer:
    for record in serialized_examples:
      writer.write(record)
      count += 1
  return count


def write_split(directory: str, split: str, serialized_examples: Sequence[bytes],
                num_shards: int) -> List[str]:
  os.makedirs(directory, exist_ok=True)
  paths = shard_paths(directory, split, num_shards)
  for i, path in enumerate(paths):
    write_shard(path, iter(serialized_examples[i::num_shards]))
  return paths


# --- reading ------------------------------------------------------------------------------------

def parse_example(serialized: tf.Tensor, image_side: int = STORED_SIDE) -> Dict[str, tf.Tensor]:
  """One serialized Example -> dict of dense tensors; image downsampled to image_side if smaller."""
  parsed = tf.io.parse_single_example(serialized, FEATURES)
  stored = tf.debugging.assert_equal(
      parsed["image_side"], tf.constant(STORED_SIDE, tf.int64),
      message=f"a record holds an image that is not {STORED_SIDE}x{STORED_SIDE}")
  with tf.control_dependencies([stored]):
    raw = tf.io.decode_raw(parsed["image"], tf.uint8)
  tf.debugging.assert_equal(tf.size(raw), STORED_SIDE * STORED_SIDE,
                            message="a record's image bytes do not match its size")
  image = tf.reshape(raw, [STORED_SIDE, STORED_SIDE])
  if image_side != STORED_SIDE:
    factor = STORED_SIDE // image_side
    pooled = tf.nn.avg_pool2d(tf.cast(image, tf.float32)[None, :, :, None], factor, factor, "VALID")
    image = tf.cast(tf.round(pooled[0, :, :, 0]), tf.uint8)
  ids = tf.sparse.to_dense(parsed["caption_ids"])
  return {
      "image": image,
      "caption_ids": tf.cast(ids, tf.int32),
      "caption_len": tf.shape(ids, out_type=tf.int32)[0],
      "caption": parsed["caption"],
      "source_id": parsed["source_id"],
      "digits": tf.cast(tf.sparse.to_dense(parsed["digits"]), tf.int32),
      "relation": parsed["relation"],
      "boxes": tf.cast(tf.sparse.to_dense(parsed["boxes"]), tf.int32),
  }


MODEL_KEYS = ("image", "caption_ids", "caption_len")
MAX_DIGITS = 2  # an MNIST-with-captions image holds one or two digits


def make_dataset(files: Sequence[str], batch_size: int, image_side: int, max_caption_len: int,
                 shuffle: bool = False, repeat: bool = False, seed: Optional[int] = None,
                 shuffle_buffer: int = 10_000, model_inputs_only: bool = True,
                 drop_remainder: bool = True, skip_batches: int = 0,
                 with_boxes: bool = False) -> tf.data.Dataset:
  """Parse, (shuffle), pad-batch captions to max_caption_len, (skip), prefetch.

  ``with_boxes`` adds to the model's inputs each example's digit boxes, "boxes" [8] int32: up to
  two (row0, col0, row1, col1) on the 32x32 image, zeros for a missing digit (MNIST only).

  Captions are padded to one fixed length so every batch has the same static shape and the
  training step is traced once. Captions longer than max_caption_len are dropped; how many, is
  what :func:`caption_lengths` tells (the Trainer reports it, and refuses more than a few).
  """
  files = list(files)
  ds = tf.data.Dataset.from_tensor_slices(files)
  if shuffle:
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
  # Deterministic order: a seeded run sees the same batches, and a resumed run continues them.
  ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if shuffle:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  if repeat:
    ds = ds.repeat()
  ds = ds.map(lambda r: parse_example(r, image_side), num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  ds = ds.filter(lambda e: e["caption_len"] <= max_caption_len)
  if model_inputs_only:
    keys = MODEL_KEYS + (("boxes",) if with_boxes else ())
    ds = ds.map(lambda e: {k: e[k] for k in keys})
    shapes = {"image": [image_side, image_side], "caption_ids": [max_caption_len],
              "caption_len": []}
    if with_boxes:
      shapes["boxes"] = [4 * MAX_DIGITS]
  else:
    shapes = {"image": [image_side, image_side], "caption_ids": [max_caption_len],
              "caption_len": [], "caption": [], "source_id": [], "digits": [None],
              "relation": [], "boxes": [None]}
  ds = ds.padded_batch(batch_size, padded_shapes=shapes, drop_remainder=drop_remainder)
  if skip_batches:  # the order is seeded and deterministic, so this resumes the same stream
    ds = ds.skip(skip_batches)
  return ds.prefetch(tf.data.AUTOTUNE)


def caption_lengths(files: Sequence[str]) -> np.ndarray:
  """Every record's caption length in tokens (<eos> included), int64 [records]: the count of
  captions make_dataset drops for a max_caption_len is ``(caption_lengths(files) > L).sum()``."""
  files = list(files)
  spec = {"caption_ids": tf.io.RaggedFeature(tf.int64)}
  ds = tf.data.TFRecordDataset(files).batch(4096).map(
      lambda records: tf.io.parse_example(records, spec)["caption_ids"].row_lengths())
  lengths = [batch.numpy() for batch in iterate(ds, files)]
  if not lengths:
    raise DataError(f"{', '.join(files)}: no records")
  return np.concatenate(lengths)


def find_corrupt_files(files: Sequence[str]) -> List[str]:
  """Files whose records fail their CRC or are truncated (read fully; used after an error)."""
  bad = []
  for path in files:
    try:
      for _ in tf.data.TFRecordDataset(path):
        pass
    except (tf.errors.DataLossError, tf.errors.OutOfRangeError, tf.errors.InvalidArgumentError):
      bad.append(path)
  return bad


def iterate(dataset: tf.data.Dataset, files: Sequence[str]) -> Iterator:
  """Iterates a dataset made from ``files``; a corrupt record becomes a DataError naming its file."""
  iterator = iter(dataset)
  while True:
    try:
      yield next(iterator)
    except StopIteration:
      return
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
      bad = find_corrupt_files(files)
      if bad:
        raise DataError(f"corrupt or truncated TFRecord file(s): {', '.join(bad)}") from None
      raise DataError(f"a record in {', '.join(files)} is malformed: "
                      f"{error.message.splitlines()[0]}") from None


def load_split(directory: str, split: str, image_side: int = STORED_SIDE,
               limit: Optional[int] = None) -> Dict[str, np.ndarray]:
  """A whole split in memory as numpy (for evaluation and pictures), with its metadata."""
  files = split_files(directory, split)
  ds = tf.data.TFRecordDataset(files).map(lambda r: parse_example(r, image_side))
  if limit is not None:
    ds = ds.take(limit)
  rows: Dict[str, list] = {}
  for example in iterate(ds, files):
    for key, value in example.items():
      rows.setdefault(key, []).append(value.numpy())
  if not rows:
    raise DataError(f"split '{split}' in {directory!r} is empty")
  out = {}
  for key, values in rows.items():
    if key in ("image",):
      out[key] = np.stack(values)
    else:
      out[key] = np.array(values, dtype=object) if key in ("caption_ids", "digits", "boxes") \
          else np.array(values)
  return out


def pad_ids(id_lists: Sequence[Sequence[int]], max_len: int) -> np.ndarray:
  out = np.full((len(id_lists), max_len), text_lib.PAD_ID, np.int32)
  for i, ids in enumerate(id_lists):
    if len(ids) > max_len:
      raise text_lib.CaptionError(f"caption has {len(ids) - 1} words; the limit is {max_len - 1}")
    out[i, :len(ids)] = ids
  return out
