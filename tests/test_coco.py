"""MS-COCO builder: a small fixture in the official layout, built, read back and resumed."""

import json
import os
import shutil
import socket

import cv2
import numpy as np
import pytest

from datasets import coco
from text2pixel import layout, text as text_lib, tfrecords

# Its module-scoped fixtures are built once: every test of this file runs on one xdist worker.
pytestmark = pytest.mark.xdist_group("coco")

WORDS = ("a man riding a horse on a beach near the sea with a dog and two birds in the sky "
         "over some trees while people watch").split()


def _caption(rng, n=8):
  return " ".join(rng.choice(WORDS, size=n))


def _noise_image(rng, height, width, channels):
  """Smooth-ish content so that a resize is not an average of pure noise."""
  base = rng.integers(0, 256, size=(max(2, height // 8), max(2, width // 8), channels or 1),
                      dtype=np.uint8)
  image = cv2.resize(base, (width, height), interpolation=cv2.INTER_LINEAR)
  image = image.reshape(height, width, -1)
  return image[:, :, 0] if not channels else image


def make_fixture(root):
  """Official-format COCO 2014 in ``root``; returns what the build must make of it.

  expected[image_id] is the grayscale source (decoded as OpenCV decodes it); captions[image_id]
  are all its raw captions in annotation order.
  """
  rng = np.random.default_rng(42)
  os.makedirs(os.path.join(root, "annotations"))
  expected, captions, info = {}, {}, {}

  def add(part, images, annotations, image_id, kind, size, caps):
    folder = os.path.join(root, f"{part}2014")
    os.makedirs(folder, exist_ok=True)
    ext = "jpg" if kind in ("rgb_jpeg", "gray_jpeg", "corrupt") else "png"
    name = f"COCO_{part}2014_{image_id:012d}.{ext}"
    path = os.path.join(folder, name)
    h, w = size
    if kind == "rgb_jpeg":
      cv2.imwrite(path, _noise_image(rng, h, w, 3))
      expected[image_id] = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2GRAY)
    elif kind == "gray_jpeg":
      cv2.imwrite(path, _noise_image(rng, h, w, 0))
      expected[image_id] = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    elif kind == "rgb_png":
      bgr = _noise_image(rng, h, w, 3)
      cv2.imwrite(path, bgr)
      expected[image_id] = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)  # lossless: from the source
    elif kind == "gray_png":
      gray = _noise_image(rng, h, w, 0)
      cv2.imwrite(path, gray)
      expected[image_id] = gray
    elif kind == "rgba_png":
      bgra = _noise_image(rng, h, w, 4)
      cv2.imwrite(path, bgra)
      expected[image_id] = cv2.cvtColor(bgra[:, :, :3], cv2.COLOR_BGR2GRAY)
    elif kind == "corrupt":
      with open(path, "wb") as f:
        f.write(b"\xff\xd8 this is not a JPEG " + bytes(rng.integers(0, 256, 300, np.uint8)))
    # kind "missing": listed in "images", no file on disk
    images.append({"id": image_id, "file_name": name, "height": h, "width": w, "license": 1})
    captions[image_id] = list(caps)
    for cap in caps:
      annotations.append({"id": 1000 + len(annotations) + (0 if part == "train" else 5000),
                          "image_id": image_id, "caption": cap})
    info[image_id] = {"kind": kind, "part": part, "path": path}

  train_images, train_anns, val_images, val_anns = [], [], [], []
  five = lambda: [_caption(rng) for _ in range(5)]
  add("train", train_images, train_anns, 1, "rgb_jpeg", (48, 64),
      ["A child in a red jacket playing street hockey"] + [_caption(rng) for _ in range(4)])
  add("train", train_images, train_anns, 2, "gray_png", (40, 40), five())
  add("train", train_images, train_anns, 3, "rgba_png", (70, 50), five())
  add("train", train_images, train_anns, 4, "rgb_jpeg", (80, 80),
      [f"a horse number {i} on a beach" for i in range(7)])  # 7 captions: only 0..4 are used
  add("train", train_images, train_anns, 5, "corrupt", (32, 32), five())
  add("train", train_images, train_anns, 6, "missing", (32, 32), five()[:2])
  add("train", train_images, train_anns, 7, "rgb_png", (33, 95),
      ["Red and white.", *five()[:3]])  # the first becomes empty once colours are removed
  add("train", train_images, train_anns, 8, "rgb_png", (64, 64),
      [" ".join(["horse"] * 30), *five()[:2]])  # 30 words: too long for max_caption_len 24
  for image_id in (9, 10, 11, 12):
    add("train", train_images, train_anns, image_id, "gray_png", (36, 44), five())
  train_anns.append({"id": 999_001, "image_id": 424242, "caption": "an orphan caption"})
  add("val", val_images, val_anns, 101, "rgb_jpeg", (60, 40),
      ["a zebra near a dark-blue car"] + [_caption(rng) for _ in range(4)])
  add("val", val_images, val_anns, 102, "gray_jpeg", (50, 50), five())
  add("val", val_images, val_anns, 103, "rgb_png", (20, 100), five())
  for part, images, anns in (("train", train_images, train_anns), ("val", val_images, val_anns)):
    with open(os.path.join(root, "annotations", f"captions_{part}2014.json"), "w") as f:
      json.dump({"info": {}, "licenses": [], "images": images, "annotations": anns}, f)
  return {"expected": expected, "captions": captions, "info": info}


BUILD_ARGS = dict(num_validation_images=2, min_word_count=1, max_caption_len=24, num_shards=3,
                  seed=3)
USABLE_TRAIN = {1, 2, 3, 4, 7, 8, 9, 10, 11, 12}


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("coco_raw"))
  return root, make_fixture(root)


@pytest.fixture(scope="module")
def built(fixture, tmp_path_factory):
  root, truth = fixture
  out = str(tmp_path_factory.mktemp("coco_out"))
  lines = []
  meta = coco.build(root, out, num_workers=1, log=lines.append, **BUILD_ARGS)
  splits = {s: tfrecords.load_split(out, s) for s in meta["splits"]}
  return out, meta, splits, truth, lines


def _image_id(source_id):
  return int(source_id.decode().split("-")[1])


def _raw_captions(out, split):
  import tensorflow as tf
  captions = []
  for record in tf.data.TFRecordDataset(layout.split_files(out, split)):
    parsed = tf.io.parse_single_example(record, tfrecords.FEATURES)
    captions.append((_image_id(parsed["source_id"].numpy()),
                     parsed["raw_caption"].numpy().decode()))
  return captions


# --- captions -----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, cleaned", [
    ("A child in a red jacket playing street hockey", "a child in a jacket playing street hockey"),
    ("A person in blue and red ice climbing with two picks",
     "a person in ice climbing with two picks"),
    ("a dark-blue car parked by a light grey wall", "a car parked by a wall"),
    ("Ducks swimming in greenish water.", "ducks swimming in water"),
    ("black and white photo of a cat", "photo of a cat"),
    ("A black-and-white photo of a red, white and blue flag", "a photo of a flag"),
    ("A light blue and dark green bus", "a bus"),
    ("an off-white plate with a reddish-brown sausage", "an plate with a sausage"),
    ("a multi-color umbrella", "a umbrella"),
    ("a man with blond hair and a navy blue shirt", "a man with hair and a shirt"),
    # words that look like colours but qualify nothing stay
    ("a hot dog with light toppings on a dark table",
     "a hot dog with light toppings on a dark table"),
    ("a grey-haired man", "a grey-haired man"),
    # known trade-off: COLOUR_WORDS holds "orange" (the colour), so the fruit goes too; likewise
    # "a golden retriever" loses "golden". The paper removes colour words without sense tagging.
    ("an orange on a table", "an on a table"),
    ("a golden retriever", "a retriever"),
])
def test_colour_words_are_removed(raw, cleaned):
  assert " ".join(coco.clean_caption(raw)) == cleaned


# --- images -------------------------------------------------------------------------------------

def test_every_colour_mode_reads_as_cv2_area_resize_of_its_grayscale(fixture):
  _, truth = fixture
  for image_id, info in truth["info"].items():
    if info["kind"] in ("corrupt", "missing"):
      with pytest.raises(coco.ImageError, match=os.path.basename(info["path"])):
        coco.read_image(info["path"])
      continue
    gray = truth["expected"][image_id]
    image = coco.read_image(info["path"])
    assert image.shape == (32, 32) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA))
    # --center_crop: the centred square, then the same resize.
    h, w = gray.shape
    s = min(h, w)
    square = gray[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    np.testing.assert_array_equal(coco.read_image(info["path"], center_crop=True),
                                  cv2.resize(square, (32, 32), interpolation=cv2.INTER_AREA))


# --- the build ----------------------------------------------------------------------------------

def test_build_writes_32x32_grayscale_of_each_source_image(built):
  out, meta, splits, truth, _ = built
  seen = set()
  for split, data in splits.items():
    assert data["image"].shape[1:] == (32, 32) and data["image"].dtype == np.uint8
    for image, source_id in zip(data["image"], data["source_id"]):
      image_id = _image_id(source_id)
      seen.add(image_id)
      want = cv2.resize(truth["expected"][image_id], (32, 32), interpolation=cv2.INTER_AREA)
      np.testing.assert_array_equal(image, want, err_msg=f"image {image_id}")
  assert seen == USABLE_TRAIN | {101, 102, 103}
  assert os.path.getsize(os.path.join(out, "preview.png")) > 0


def test_first_five_captions_cleaned_and_encoded(built):
  out, meta, splits, truth, _ = built
  vocab = layout.load_vocabulary(out)
  by_image = {}
  for split in splits:
    for image_id, raw in _raw_captions(out, split):
      by_image.setdefault(image_id, []).append(raw)
  # Image 4 has seven captions: exactly its first five are used, each once.
  assert sorted(by_image[4]) == sorted(truth["captions"][4][:5])
  # Image 7's "Red and white." is empty after cleaning, image 8's 30-word caption too long.
  assert sorted(by_image[7]) == sorted(truth["captions"][7][1:])
  assert sorted(by_image[8]) == sorted(truth["captions"][8][1:])
  assert meta["sources"]["train2014"]["skipped_captions"]["empty"]["count"] == 1
  assert meta["sources"]["train2014"]["skipped_captions"]["too_long"]["count"] == 1
  assert meta["sources"]["train2014"]["stats"]["captions_beyond_five"] == 2
  total = 0
  for split, data in splits.items():
    for ids, caption in zip(data["caption_ids"], data["caption"]):
      caption = caption.decode()
      assert ids[-1] == text_lib.EOS_ID and len(ids) <= 24
      assert list(ids) == vocab.encode(caption, 24)
      assert caption == " ".join(coco.clean_caption(caption))  # already clean
      total += 1
  assert total == sum(meta["splits"].values())
  captions = [c.decode() for d in splits.values() for c in d["caption"]]
  assert "a child in a jacket playing street hockey" in captions
  assert "a zebra near a car" in captions


def test_splits_share_no_image_and_vocabulary_comes_from_train(built, fixture):
  out, meta, splits, truth, _ = built
  ids = {s: {_image_id(x) for x in d["source_id"]} for s, d in splits.items()}
  assert ids["test"] == {101, 102, 103}
  assert len(ids["validation"]) == 2 and ids["validation"] | ids["train"] == USABLE_TRAIN
  assert not ids["train"] & ids["validation"]
  assert meta["images"] == {s: len(v) for s, v in ids.items()}
  # The vocabulary is made from the train split's captions before any image is decoded (so a
  # resumed build gets the same ids); the captions of train images found unreadable later
  # (image 5) count too.
  planned, _ = coco.load_and_split(fixture[0], "2014", 24, 2, seed=3)
  planned_train = {e.image_id for e in planned["train"]}
  assert planned_train - {5} == ids["train"]
  words = [coco.clean_caption(c) for i in planned_train for c in truth["captions"][i][:5]]
  words = [w for w in words if w and len(w) < 24]
  vocab = layout.load_vocabulary(out)
  assert vocab == text_lib.Vocabulary.build(words)
  assert meta["vocab_size"] == len(vocab)
  assert "zebra" not in vocab.words  # a test-only word
  # Every image's examples sit in one shard (splits and shards are by whole images).
  import tensorflow as tf
  for split in splits:
    owner = {}
    for path in layout.split_files(out, split):
      for record in tf.data.TFRecordDataset(path):
        source = tf.io.parse_single_example(record, tfrecords.FEATURES)["source_id"].numpy()
        assert owner.setdefault(source, path) == path


def test_bad_inputs_are_reported_with_their_ids_and_skipped(built):
  out, meta, _, _, _ = built
  problems = {(p["kind"], p["image_id"], p["annotation_id"]) for p in meta["problems"]}
  assert ("unreadable_image", 5, None) in problems
  assert ("missing_file", 6, None) in problems
  assert ("unknown_image_id", 424242, 999_001) in problems
  assert len(meta["problems"]) == 3
  assert layout.read_metadata(out)["problems"] == meta["problems"]
  text = coco.summary(out)
  for needle in ("unreadable_image (image 5)", "missing_file (image 6)",
                 "unknown_image_id (image 424242, annotation 999001)"):
    assert needle in text


def test_missing_annotation_file_is_a_clear_error(fixture, tmp_path):
  root, _ = fixture
  partial = tmp_path / "coco"
  shutil.copytree(root, partial)
  os.remove(partial / "annotations" / "captions_val2014.json")
  with pytest.raises(tfrecords.DataError, match=r"captions_val2014\.json is missing"):
    coco.build(str(partial), str(tmp_path / "out"), log=lambda *_: None, **BUILD_ARGS)
  with pytest.raises(tfrecords.DataError, match=r"captions_train2017\.json is missing"):
    coco.build(str(partial), str(tmp_path / "out"), year="2017", log=lambda *_: None)


def _shard_bytes(out):
  names = sorted(n for n in os.listdir(out) if ".tfrecord-" in n)
  return {n: open(os.path.join(out, n), "rb").read() for n in names}


def test_resume_rewrites_only_the_lost_shard_byte_for_byte(built, fixture, tmp_path):
  root, _ = fixture
  reference = _shard_bytes(built[0])
  assert built[1]["last_run"]["shards_written"] == len(reference) == 5  # train 3, val 1, test 1
  out = str(tmp_path / "out")
  shutil.copytree(built[0], out)
  lost = sorted(reference)[1]
  os.remove(os.path.join(out, lost))
  lines = []
  again = coco.build(root, out, num_workers=1, log=lines.append, **BUILD_ARGS)
  assert again["last_run"]["shards_written"] == 1
  assert again["last_run"]["shards_kept"] == len(reference) - 1
  assert any(f"kept {len(reference) - 1} complete shard" in line for line in lines)
  assert sum("images/s, ETA" in line for line in lines) == 1  # progress of the one shard written
  assert _shard_bytes(out) == reference
  assert again["problems"] == built[1]["problems"] and again["splits"] == built[1]["splits"]
  # A shard whose report says it came from other inputs is rewritten, not trusted.
  report = os.path.join(out, "shard_reports", "test-00000-of-00001.json")
  with open(report) as f:
    data = json.load(f)
  with open(report, "w") as f:
    json.dump({**data, "digest": "0" * 64}, f)
  assert coco.build(root, out, num_workers=1, log=lambda *_: None,
                    **BUILD_ARGS)["last_run"]["shards_written"] == 1
  assert _shard_bytes(out) == reference
  # Another shard count would leave stale shards behind: refused unless --overwrite.
  with pytest.raises(tfrecords.DataError, match="overwrite"):
    coco.build(root, out, num_workers=1, log=lambda *_: None, **{**BUILD_ARGS, "num_shards": 2})
  redone = coco.build(root, out, num_workers=1, log=lambda *_: None, overwrite=True,
                      **{**BUILD_ARGS, "num_shards": 2})
  assert redone["splits"] == built[1]["splits"]
  assert len(layout.split_files(out, "train")) == 2


@pytest.mark.slow
def test_worker_processes_write_the_same_bytes(built, fixture, tmp_path):
  root, _ = fixture
  out = str(tmp_path / "out")
  lines = []
  meta = coco.build(root, out, num_workers=2, log=lines.append, **BUILD_ARGS)
  assert "with 2 worker(s)" in "\n".join(lines)
  assert sum("images/s, ETA" in line for line in lines) == meta["last_run"]["shards_written"] == 5
  assert _shard_bytes(out) == _shard_bytes(built[0])
  assert meta["problems"] == built[1]["problems"]


def test_tfds_builder_builds_and_loads_offline(built, fixture, tmp_path, monkeypatch):
  import tensorflow_datasets as tfds
  from datasets import coco_tfds

  def no_network(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args}")
  monkeypatch.setattr(socket.socket, "connect", no_network)
  monkeypatch.setattr(socket, "create_connection", no_network)
  root, truth = fixture
  config = coco_tfds.Text2pixelCocoConfig(name="fixture", num_validation_images=2, seed=3)
  builder = tfds.builder("text2pixel_coco", config=config, data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=root, try_download_gcs=False))
  meta = built[1]
  for split in ("train", "validation", "test"):
    examples = list(tfds.as_numpy(builder.as_dataset(split=split)))
    assert len(examples) == meta["splits"][split]
    for e in examples:
      assert e["image"].shape == (32, 32, 1) and e["image"].dtype == np.uint8
      want = cv2.resize(truth["expected"][int(e["image_id"])], (32, 32),
                        interpolation=cv2.INTER_AREA)
      np.testing.assert_array_equal(e["image"][:, :, 0], want)
      assert e["caption"].decode() == " ".join(coco.clean_caption(e["raw_caption"].decode()))
    ours = {_image_id(s) for s in built[2][split]["source_id"]}
    assert {int(e["image_id"]) for e in examples} == ours
