"""Foundation: real MNIST verified by MD5, the caption builder, text, vocabulary and TFRecords."""

import gzip
import io
import os
import pickle

import numpy as np
import pytest
import tensorflow as tf

from datasets import mnist, mnist_captions
from text2pixel import atomic, layout, text as text_lib, tfrecords


def test_real_mnist_matches_official_md5(mnist_arrays):
  assert mnist_arrays["train_images"].shape == (60_000, 28, 28)
  assert mnist_arrays["test_images"].shape == (10_000, 28, 28)
  mnist.verify(mnist_arrays, "test")  # raises if any array differs from the official idx bytes


def test_tampered_mnist_is_rejected(mnist_arrays, tmp_path):
  # Official idx files, one pixel changed in the test images: the loader must refuse them.
  for key, name in mnist.IDX_NAMES.items():
    array = mnist_arrays[key].copy()
    if key == "test_images":
      array[123, 14, 14] ^= 0xFF
      with gzip.open(tmp_path / (name + ".gz"), "wb", compresslevel=1) as f:
        f.write(mnist.idx_bytes(array))
    else:
      (tmp_path / name).write_bytes(mnist.idx_bytes(array))
  with pytest.raises(mnist.MnistError, match="test_images .* does not match the official"):
    mnist.load_idx_directory(str(tmp_path))


def test_untampered_idx_directory_loads(mnist_arrays, tmp_path):
  for key, name in mnist.IDX_NAMES.items():  # plain (not gzipped) idx files
    (tmp_path / name).write_bytes(mnist.idx_bytes(mnist_arrays[key]))
  loaded = mnist.load_idx_directory(str(tmp_path))
  np.testing.assert_array_equal(loaded["test_labels"], mnist_arrays["test_labels"])


def test_unpickler_refuses_code(tmp_path):
  class Evil:
    def __reduce__(self):
      return (os.system, ("echo pwned",))
  payload = pickle.dumps(Evil())
  with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
    mnist.restricted_unpickle(io.BytesIO(payload))
  path = tmp_path / "mnist.pkl.gz"
  with gzip.open(path, "wb") as f:
    f.write(payload)
  with pytest.raises(mnist.MnistError, match="refusing"):
    mnist.load_pickle(str(path))


@pytest.mark.parametrize("relation", mnist_captions.RELATIONS)
def test_every_template_puts_the_named_digits_in_the_named_place(mnist_arrays, relation):
  rng = np.random.default_rng(0)
  images, labels = mnist_arrays["train_images"], mnist_arrays["train_labels"]
  one, seven = int(np.flatnonzero(labels == 1)[0]), int(np.flatnonzero(labels == 7)[0])
  digits = [images[one], images[seven]][:2 if relation in mnist_captions.TWO_DIGIT else 1]
  positions = mnist_captions._positions(relation, rng)
  image, boxes = mnist_captions.render(digits, positions)
  assert image.shape == (32, 32) and image.dtype == np.uint8
  mass = image.astype(float)
  half = 16
  quadrant = {"top": mass[:half].sum(), "bottom": mass[half:].sum(),
              "left": mass[:, :half].sum(), "right": mass[:, half:].sum()}
  caption = mnist_captions.caption_for(relation, [1, 7])
  if relation in mnist_captions.TWO_DIGIT:
    # The first-named digit's box lies on the named side of the second's.
    (r0, c0, _, _), (r1, c1, _, _) = boxes
    expected = {"left": c0 < c1, "right": c0 > c1, "top": r0 < r1, "bottom": r0 > r1}[relation]
    assert expected, (caption, boxes)
    # and its pixels really are there: the named digit's box holds most of its own ink.
    box_mass = mass[r0:boxes[0][2], c0:boxes[0][3]].sum()
    assert box_mass > 0.25 * mass.sum()
  else:
    vertical, horizontal = relation.split("_")
    assert quadrant[vertical] > 0.9 * mass.sum(), caption
    assert quadrant[horizontal] > 0.9 * mass.sum(), caption
  assert caption.startswith("the digit 1 is")


def test_builder_splits_sizes_heldout_and_preview(mnist_captions_dir):
  meta = layout.read_metadata(mnist_captions_dir)
  assert meta["splits"] == {"train": 640, "validation": 64, "test": 64, "heldout": 64}
  assert os.path.getsize(os.path.join(mnist_captions_dir, "preview.png")) > 1000
  data = {s: tfrecords.load_split(mnist_captions_dir, s) for s in meta["splits"]}
  for split in ("train", "validation", "test"):
    for relation, digits in zip(data[split]["relation"], data[split]["digits"]):
      assert not mnist_captions.is_held_out(relation.decode(), digits.tolist())
  for relation, digits in zip(data["heldout"]["relation"], data["heldout"]["digits"]):
    assert mnist_captions.is_held_out(relation.decode(), digits.tolist())
  # Train digits come from MNIST train, test and held-out from MNIST test.
  assert all(s.startswith(b"mnist-train-") for s in data["train"]["source_id"])
  assert all(s.startswith(b"mnist-test-") for s in data["heldout"]["source_id"])
  assert len(set(data["train"]["relation"].tolist())) == 8


def test_builder_is_reproducible(tmp_path, mnist_captions_dir):
  again = str(tmp_path / "again")
  mnist_captions.build(again, 640, 64, 64, 64, seed=7, num_shards=2, log=lambda *_: None)
  for name in sorted(os.listdir(mnist_captions_dir)):
    if ".tfrecord-" in name or name == "vocab.json":
      with open(os.path.join(mnist_captions_dir, name), "rb") as a, \
          open(os.path.join(again, name), "rb") as b:
        assert a.read() == b.read(), name


def test_tokenizer_matches_in_graph_tokenizer():
  rng = np.random.default_rng(3)
  alphabet = list("aZ9 -'.,!é") + ["  ", "--", "'s", "K"]
  cases = ["The digit 5 is on the LEFT of the digit 3.", "a dark-blue car", "man's hat -- 'ok'",
           "", "   ", "x-'y", "'a'", "-", "multi-colored"] + [
               "".join(rng.choice(alphabet, size=rng.integers(0, 15))) for _ in range(300)]
  graph = text_lib.tokenize_tf(tf.constant(cases)).to_list()
  for case, tokens in zip(cases, graph):
    assert [t.decode() for t in tokens] == text_lib.tokenize(case), repr(case)


def test_vocabulary_round_trip_and_unknown_words(tmp_path):
  vocab = text_lib.Vocabulary.build([["the", "digit", "5"], ["the", "digit", "7"]])
  assert vocab.words[:3] == ["<pad>", "<unk>", "<eos>"]
  path = str(tmp_path / "vocab.json")
  vocab.save(path)
  again = text_lib.Vocabulary.load(path)
  assert again == vocab
  ids = again.encode("The digit 5 is blue", max_len=8)
  assert ids[-1] == text_lib.EOS_ID and ids.count(text_lib.UNK_ID) == 2
  assert again.decode(ids) == "the digit 5 <unk> <unk>"
  with pytest.raises(text_lib.CaptionError, match="limit is 3"):
    again.encode("one two three four", max_len=4)
  with pytest.raises(text_lib.CaptionError, match="no words"):
    again.encode("  ...  ", max_len=4)


def test_tfrecord_round_trip_and_batching(tmp_path):
  vocab = text_lib.Vocabulary.build([["a", "b", "c"]])
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(10, 32, 32), dtype=np.uint8)
  records = [tfrecords.make_example(images[i], vocab.encode("a b" if i % 2 else "c", 8), "x", "X",
                                    f"id-{i}", digits=[i % 10], relation="left",
                                    boxes=[(1, 2, 3, 4)]) for i in range(10)]
  tfrecords.write_split(str(tmp_path), "train", records, num_shards=3)
  loaded = tfrecords.load_split(str(tmp_path), "train")
  order = np.argsort([int(s.decode().split("-")[1]) for s in loaded["source_id"]])
  np.testing.assert_array_equal(loaded["image"][order], images)
  assert loaded["boxes"][0].tolist() == [1, 2, 3, 4]
  files = layout.split_files(str(tmp_path), "train")
  batch = next(iter(tfrecords.make_dataset(files, 4, image_side=8, max_caption_len=6)))
  assert batch["image"].shape == (4, 8, 8) and batch["caption_ids"].shape == (4, 6)
  # The model's 8x8 images are the 4x4 average pool of the stored 32x32 ones.
  small = tfrecords.load_split(str(tmp_path), "train", image_side=8)
  expected = np.rint(images.reshape(10, 8, 4, 8, 4).mean(axis=(2, 4)))
  np.testing.assert_allclose(small["image"][order], expected, atol=1)


def test_a_write_that_fails_half_way_leaves_no_half_file(tmp_path):
  # What a rerun trusts (a shard, a config, run.json, a cache) is either whole or absent.
  def records_then_failure():
    yield tfrecords.make_example(np.zeros((32, 32), np.uint8), [3, 2], "a", "a", "id")
    raise KeyboardInterrupt
  shard = str(tmp_path / "train.tfrecord-00000-of-00001")
  with pytest.raises(KeyboardInterrupt):
    tfrecords.write_shard(shard, records_then_failure())
  assert os.listdir(tmp_path) == []
  path = str(tmp_path / "run.json")
  atomic.write_json(path, {"step": 1})
  with pytest.raises(TypeError):  # json.dump has written '{"step": ' when it meets the object
    atomic.write_json(path, {"step": object()})
  assert os.listdir(tmp_path) == ["run.json"] and layout.read_run_info(str(tmp_path)) == {"step": 1}


def test_corrupt_or_missing_shards_name_the_file(tmp_path):
  records = [tfrecords.make_example(np.zeros((32, 32), np.uint8), [3, 2], "a", "a", "id")] * 50
  tfrecords.write_split(str(tmp_path), "train", records, num_shards=2)
  files = layout.split_files(str(tmp_path), "train")
  with open(files[1], "r+b") as f:  # flip bytes inside a record body
    f.seek(200)
    f.write(b"\x00garbage\x00")
  ds = tfrecords.make_dataset(files, 4, 32, 4)
  with pytest.raises(tfrecords.DataError, match=os.path.basename(files[1])):
    for _ in tfrecords.iterate(ds, files):
      pass
  os.remove(files[0])
  with pytest.raises(tfrecords.DataError, match="has 1 of 2 shards"):
    layout.split_files(str(tmp_path), "train")
  with pytest.raises(tfrecords.DataError, match="no TFRecords for split 'test'"):
    layout.split_files(str(tmp_path), "test")


def test_wrong_image_size_in_a_record_is_an_error(tmp_path):
  example = tf.train.Example(features=tf.train.Features(feature={
      "image": tfrecords._bytes([bytes(16 * 16)]), "image_side": tfrecords._ints([16]),
      "caption_ids": tfrecords._ints([3, 2]), "caption": tfrecords._bytes([b"a"]),
      "raw_caption": tfrecords._bytes([b"a"]), "source_id": tfrecords._bytes([b"x"])}))
  path = str(tmp_path / "train.tfrecord-00000-of-00001")
  with tf.io.TFRecordWriter(path) as w:
    w.write(example.SerializeToString())
  ds = tfrecords.make_dataset([path], 1, 32, 4, drop_remainder=False)
  with pytest.raises(tfrecords.DataError, match="not 32x32"):
    list(tfrecords.iterate(ds, [path]))
