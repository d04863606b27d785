"""MS-COCO captions as text2pixel TFRecords: 32x32 grayscale images, colour words removed.

Input is the official release as downloaded, under ``--coco_dir``:

  annotations/captions_train2014.json   train2014/COCO_train2014_*.jpg
  annotations/captions_val2014.json     val2014/COCO_val2014_*.jpg
  (or the 2017 names with --year 2017: captions_{train,val}2017.json, {train,val}2017/)

What is written (the paper's set-up, alignDRAW/alignPixelRNN):
  * every image read with OpenCV as stored (EXIF orientation ignored, as the annotations are),
    converted to grayscale, optionally centre-cropped to a square (--center_crop), resized to
    32x32 with INTER_AREA, kept as uint8;
  * the first five captions of each image in annotation order, one example per (image, caption);
  * captions tokenized (text.tokenize) and stripped of colour words (text.remove_colour_words);
    a caption that is then empty or longer than --max_caption_len (incl. <eos>) is skipped and
    counted, never truncated. A skipped caption is not replaced by the image's sixth caption;
  * splits: test = the official val images, validation = a seeded choice of whole train images,
    train = the other train images. Examples of one image are always in one split and one shard;
  * the vocabulary (vocab.json) comes from the train split's cleaned captions alone.

The build is resumable: images go to shards by a seeded permutation, each shard is written
atomically with a small report (shard_reports/) holding a digest of everything that determines
its bytes; a re-run keeps every shard whose digest still matches and writes the rest. Bad inputs
(unreadable images, missing files, annotations of unknown images) are skipped and listed with
their ids in metadata.json under "problems" and in the console summary.

Run: ``text2pixel-build-coco --coco_dir workspace/coco_raw --out_dir workspace/data/coco``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import glob
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from text2pixel import atomic, layout, pictures, text as text_lib, tfrecords

SIDE = tfrecords.STORED_SIDE
CAPTIONS_PER_IMAGE = 5
YEARS = ("2014", "2017")
SPLITS = ("train", "validation", "test")
# Which official part each split is drawn from ("source"), per year: train/validation <- train.
_SOURCE_OF = {"train": "train", "validation": "train", "test": "val"}
_SPLIT_CODE = {"train": 0, "validation": 1, "test": 2}  # seeds per split, stable across runs
_REPORT_DIR = "shard_reports"
_MAX_LISTED_IDS = 100  # skipped-caption ids kept per reason in metadata (the count is exact)

Log = Callable[[str], None]


class ImageError(ValueError):
  """An image file that cannot be used; the message names the file."""


# --- reading one image --------------------------------------------------------------------------

def to_model_image(image: np.ndarray, center_crop: bool = False) -> np.ndarray:
  """A decoded OpenCV image (gray, BGR or BGRA; 8 or 16 bit) -> 32x32 grayscale uint8."""
  if image.dtype == np.uint16:
    image = cv2.convertScaleAbs(image, alpha=1 / 257)  # 16-bit PNGs: rounds to 0..255
  if image.dtype != np.uint8:
    raise ImageError(f"unsupported pixel type {image.dtype}")
  if image.ndim == 3 and image.shape[2] == 1:
    image = image[:, :, 0]
  if image.ndim == 2:
    gray = image
  elif image.ndim == 3 and image.shape[2] == 3:
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
  elif image.ndim == 3 and image.shape[2] == 4:
    gray = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)  # alpha is ignored, not composited
  else:
    raise ImageError(f"unsupported image shape {image.shape}")
  height, width = gray.shape
  if height == 0 or width == 0:
    raise ImageError("empty image")
  if center_crop:
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    gray = gray[top:top + side, left:left + side]
  return cv2.resize(gray, (SIDE, SIDE), interpolation=cv2.INTER_AREA).astype(np.uint8)


def read_image(path: str, center_crop: bool = False) -> np.ndarray:
  """Reads any image OpenCV decodes (JPEG/PNG, gray/RGB/RGBA) as a 32x32 grayscale uint8."""
  if not os.path.isfile(path):
    raise ImageError(f"{path} does not exist")
  # IMREAD_UNCHANGED: no EXIF rotation (the annotations' width/height are of the stored pixels).
  try:
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
  except cv2.error as error:  # e.g. over OpenCV's pixel limit
    raise ImageError(f"{path} cannot be decoded: {error.msg}") from None
  if image is None:
    raise ImageError(f"{path} is not a readable image (corrupt, truncated or unknown format)")
  try:
    return to_model_image(image, center_crop)
  except ImageError as error:
    raise ImageError(f"{path}: {error}") from None


# --- captions and annotation files -------------------------------------------------------------

def clean_caption(raw: str) -> List[str]:
  """The tokens a caption is trained on: tokenized, lower-cased, colour words removed."""
  return text_lib.remove_colour_words(text_lib.tokenize(raw))


@dataclasses.dataclass(frozen=True)
class Caption:
  annotation_id: int
  raw: str
  tokens: Tuple[str, ...]

  @property
  def text(self) -> str:
    return " ".join(self.tokens)


@dataclasses.dataclass(frozen=True)
class ImageEntry:
  image_id: int
  file_name: str  # relative to the image folder; what the plan digests (not the absolute path)
  path: str
  captions: Tuple[Caption, ...]


@dataclasses.dataclass
class SourceCaptions:
  """One official annotation file, read and cleaned, with everything that was left out."""
  name: str                        # e.g. "train2014"
  entries: List[ImageEntry]        # images with at least one usable caption, by image id
  problems: List[Dict]
  skipped: Dict[str, List[int]]    # reason ("empty" | "too_long") -> annotation ids
  stats: Dict[str, int]


def input_paths(coco_dir: str, year: str = "2014") -> Dict[str, Tuple[str, str]]:
  """{"train" | "val": (captions json, image folder)}; a clear DataError if one is missing."""
  if year not in YEARS:
    raise ValueError(f"year must be one of {YEARS}, got {year!r}")
  paths = {}
  for part in ("train", "val"):
    json_path = os.path.join(coco_dir, "annotations", f"captions_{part}{year}.json")
    image_dir = os.path.join(coco_dir, f"{part}{year}")
    if not os.path.isfile(json_path):
      raise tfrecords.DataError(
          f"COCO annotation file {json_path} is missing: unpack annotations_trainval{year}.zip "
          f"into {coco_dir!r} (it holds annotations/captions_{part}{year}.json)")
    if not os.path.isdir(image_dir):
      raise tfrecords.DataError(
          f"COCO image folder {image_dir} is missing: unpack {part}{year}.zip into {coco_dir!r}")
    paths[part] = (json_path, os.path.abspath(image_dir))
  return paths


def _read_json(path: str) -> Dict:
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
    raise tfrecords.DataError(f"cannot read COCO annotation file {path}: {error}") from None
  if (not isinstance(data, dict) or not isinstance(data.get("images"), list)
      or not isinstance(data.get("annotations"), list)):
    raise tfrecords.DataError(f"{path} is not a COCO captions file (expected a JSON object with "
                              "\"images\" and \"annotations\" lists)")
  return data


def _problem(kind: str, source: str, detail: str, image_id: Optional[int] = None,
             annotation_id: Optional[int] = None, file: str = "") -> Dict:
  return {"kind": kind, "source": source, "image_id": image_id, "annotation_id": annotation_id,
          "file": file, "detail": detail}


def _problem_order(p: Dict) -> Tuple:
  return (p["source"], p["kind"], p["image_id"] if p["image_id"] is not None else -1,
          p["annotation_id"] if p["annotation_id"] is not None else -1, p["file"])


def load_source(json_path: str, image_dir: str, name: str, max_caption_len: int) -> SourceCaptions:
  """Reads one captions file: the first five captions of every image, cleaned and filtered.

  Costs no image decoding (only a stat per image), so it runs before any image work and the
  vocabulary it leads to is the same on every run.
  """
  data = _read_json(json_path)
  problems: List[Dict] = []
  files: Dict[int, str] = {}
  for item in data["images"]:
    try:
      image_id, file_name = int(item["id"]), str(item["file_name"])
    except (KeyError, TypeError, ValueError):
      problems.append(_problem("malformed_image_entry", name, repr(item)[:200]))
      continue
    if image_id in files:
      problems.append(_problem("duplicate_image_id", name, "listed twice; the first is used",
                               image_id=image_id, file=file_name))
      continue
    files[image_id] = file_name
  by_image: Dict[int, List[Tuple[int, str]]] = collections.defaultdict(list)
  for ann in data["annotations"]:
    try:
      image_id, annotation_id, raw = int(ann["image_id"]), int(ann.get("id", -1)), ann["caption"]
    except (KeyError, TypeError, ValueError, AttributeError):
      problems.append(_problem("malformed_annotation", name, repr(ann)[:200]))
      continue
    if not isinstance(raw, str):
      problems.append(_problem("malformed_annotation", name, "caption is not a string",
                               image_id=image_id, annotation_id=annotation_id))
    elif image_id not in files:
      problems.append(_problem("unknown_image_id", name, "annotation of an image id that is not "
                               "in \"images\"", image_id=image_id, annotation_id=annotation_id))
    else:
      by_image[image_id].append((annotation_id, raw))  # kept in annotation order
  skipped: Dict[str, List[int]] = {"empty": [], "too_long": []}
  stats = dict(images_listed=len(files), annotations=len(data["annotations"]),
               images_without_captions=0, images_without_usable_captions=0,
               captions_beyond_five=0)
  entries = []
  for image_id in sorted(files):
    annotations = by_image.get(image_id)
    if not annotations:
      stats["images_without_captions"] += 1
      continue
    path = os.path.join(image_dir, files[image_id])
    if not os.path.isfile(path):
      problems.append(_problem("missing_file", name, "the image file does not exist",
                               image_id=image_id, file=files[image_id]))
      continue
    stats["captions_beyond_five"] += max(0, len(annotations) - CAPTIONS_PER_IMAGE)
    captions = []
    for annotation_id, raw in annotations[:CAPTIONS_PER_IMAGE]:
      tokens = clean_caption(raw)
      if not tokens:
        skipped["empty"].append(annotation_id)
      elif len(tokens) + 1 > max_caption_len:  # +1: <eos>
        skipped["too_long"].append(annotation_id)
      else:
        captions.append(Caption(annotation_id, raw, tuple(tokens)))
    if not captions:
      stats["images_without_usable_captions"] += 1
      continue
    entries.append(ImageEntry(image_id, files[image_id], path, tuple(captions)))
  stats["images_used"] = len(entries)
  stats["captions_used"] = sum(len(e.captions) for e in entries)
  return SourceCaptions(name, entries, problems, skipped, stats)


def _subset(entries: Sequence[ImageEntry], count: int, rng: np.random.Generator
            ) -> Tuple[List[ImageEntry], List[ImageEntry]]:
  """A seeded choice of ``count`` entries (kept in id order) and the rest."""
  chosen = set(rng.choice(len(entries), size=count, replace=False).tolist())
  return ([e for i, e in enumerate(entries) if i in chosen],
          [e for i, e in enumerate(entries) if i not in chosen])


def split_entries(train_source: Sequence[ImageEntry], test_source: Sequence[ImageEntry],
                  num_validation_images: int, seed: int, max_train_images: int = 0,
                  max_test_images: int = 0) -> Dict[str, List[ImageEntry]]:
  """Whole images to splits: validation carved from train (seeded), test = official val."""
  if num_validation_images >= len(train_source):
    raise tfrecords.DataError(
        f"num_validation_images={num_validation_images} leaves no training images: only "
        f"{len(train_source)} train images have usable captions")
  rng = np.random.default_rng(seed)
  # Validation is drawn first, so --max_train_images never changes which images validate.
  validation, train = _subset(train_source, num_validation_images, rng)
  if 0 < max_train_images < len(train):
    train, _ = _subset(train, max_train_images, rng)
  test = list(test_source)
  if 0 < max_test_images < len(test):
    test, _ = _subset(test, max_test_images, rng)
  return {"train": train, "validation": validation, "test": test}


def load_and_split(coco_dir: str, year: str, max_caption_len: int, num_validation_images: int,
                   seed: int, max_train_images: int = 0, max_test_images: int = 0
                   ) -> Tuple[Dict[str, List[ImageEntry]], Dict[str, SourceCaptions]]:
  """Both annotation files read and cleaned, then split: what both builders start from."""
  sources = {}
  for part, (json_path, image_dir) in input_paths(coco_dir, year).items():
    sources[part] = load_source(json_path, image_dir, f"{part}{year}", max_caption_len)
  splits = split_entries(sources["train"].entries, sources["val"].entries, num_validation_images,
                         seed, max_train_images, max_test_images)
  return splits, sources


def build_vocabulary(train: Sequence[ImageEntry], min_count: int) -> text_lib.Vocabulary:
  return text_lib.Vocabulary.build((c.tokens for e in train for c in e.captions), min_count)


# --- shards -------------------------------------------------------------------------------------

@dataclasses.dataclass
class ShardTask:
  split: str
  source: str                                      # e.g. "train2014", for problem reports
  index: int
  num_shards: int
  path: str
  report_path: str
  center_crop: bool
  images: List[Tuple[int, str, str]]               # (image_id, file_name, path)
  examples: List[Tuple[int, str, str, List[int]]]  # (index into images, caption, raw, ids)
  digest: str = ""

  def compute_digest(self) -> str:
    """Everything but the image files' bytes that decides what the shard holds."""
    content = {"schema": 1, "center_crop": self.center_crop, "side": SIDE,
               "images": [i[:2] for i in self.images], "examples": self.examples}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()


def shard_counts(sizes: Dict[str, int], num_shards: int) -> Dict[str, int]:
  """Train gets num_shards; the other splits as many in proportion to their size (at least 1)."""
  train = max(1, sizes.get("train", 0))
  counts = {}
  for split, size in sizes.items():
    wanted = num_shards if split == "train" else round(num_shards * size / train)
    counts[split] = max(1, min(wanted, num_shards, size)) if size else 0
  return counts


def plan_shards(out_dir: str, splits: Dict[str, List[ImageEntry]], vocab: text_lib.Vocabulary,
                num_shards: int, seed: int, max_caption_len: int, center_crop: bool,
                year: str = "2014") -> List[ShardTask]:
  """Images to shards by a seeded permutation; examples within a shard in a seeded order."""
  counts = shard_counts({k: len(v) for k, v in splits.items()}, num_shards)
  tasks = []
  for split, entries in splits.items():
    if not entries:
      continue
    n = counts[split]
    paths = tfrecords.shard_paths(out_dir, split, n)
    order = np.random.default_rng([seed, _SPLIT_CODE[split]]).permutation(len(entries))
    for k in range(n):
      chosen = [entries[i] for i in order[k::n]]
      pairs = [(i, c) for i, e in enumerate(chosen) for c in e.captions]
      # Shuffled so that the five captions of an image are not neighbours in the file.
      shuffle = np.random.default_rng([seed, _SPLIT_CODE[split], k]).permutation(len(pairs))
      examples = []
      for j in shuffle:
        i, caption = pairs[j]
        examples.append((i, caption.text, caption.raw, vocab.encode(caption.text, max_caption_len)))
      task = ShardTask(split, f"{_SOURCE_OF[split]}{year}", k, n, paths[k],
                       os.path.join(out_dir, _REPORT_DIR, f"{split}-{k:05d}-of-{n:05d}.json"),
                       center_crop, [(e.image_id, e.file_name, e.path) for e in chosen], examples)
      task.digest = task.compute_digest()
      tasks.append(task)
  return tasks


def _init_worker() -> None:
  cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would oversubscribe


def write_shard_task(task: ShardTask) -> Dict:
  """Reads the shard's images, writes its report, then the shard itself (both atomically)."""
  start = time.time()
  images, problems = {}, []
  for i, (image_id, file_name, path) in enumerate(task.images):
    try:
      images[i] = read_image(path, task.center_crop)
    except ImageError as error:
      problems.append(_problem("unreadable_image", task.source, str(error), image_id=image_id,
                               file=file_name))
  records = [tfrecords.make_example(images[i], ids, caption, raw,
                                    f"coco-{task.images[i][0]}")
             for i, caption, raw, ids in task.examples if i in images]
  report = {"split": task.split, "shard": task.index, "num_shards": task.num_shards,
            "digest": task.digest, "images": len(images), "examples": len(records),
            "problems": problems}
  # Report first: a shard file that exists always has its report; a report without its shard
  # (killed in between) is simply redone.
  atomic.write_json(task.report_path, report, indent=1, sort_keys=True)
  tfrecords.write_shard(task.path, iter(records))
  report["seconds"] = time.time() - start
  return report


def _existing_report(task: ShardTask) -> Optional[Dict]:
  """The report of a complete shard built from exactly this plan, else None."""
  if not (os.path.exists(task.path) and os.path.exists(task.report_path)):
    return None
  try:
    with open(task.report_path, encoding="utf-8") as f:
      report = json.load(f)
  except (OSError, json.JSONDecodeError):
    return None
  return report if report.get("digest") == task.digest else None


def _stray_files(out_dir: str, tasks: Sequence[ShardTask]) -> List[str]:
  """Shards of our splits that the plan does not write (another --num_shards, an older build)."""
  planned = {t.path for t in tasks} | {t.report_path for t in tasks}
  found = []
  for split in SPLITS:
    found += glob.glob(os.path.join(out_dir, f"{split}.tfrecord-*"))
  found += glob.glob(os.path.join(out_dir, _REPORT_DIR, "*.json"))
  return sorted(f for f in found if f not in planned and not f.endswith(".incomplete"))


def _clear_outputs(out_dir: str) -> None:
  for split in SPLITS:
    for path in glob.glob(os.path.join(out_dir, f"{split}.tfrecord-*")):
      os.remove(path)
  shutil.rmtree(os.path.join(out_dir, _REPORT_DIR), ignore_errors=True)
  for name in ("metadata.json", "vocab.json", "preview.png"):
    if os.path.exists(os.path.join(out_dir, name)):
      os.remove(os.path.join(out_dir, name))


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def run_tasks(tasks: Sequence[ShardTask], num_workers: int, log: Log) -> List[Dict]:
  """Writes every shard (in worker processes when num_workers > 1), logging progress."""
  total_images = sum(len(t.images) for t in tasks)
  done_images, start, reports = 0, time.time(), []

  def progress(task: ShardTask, report: Dict) -> None:
    nonlocal done_images
    reports.append(report)
    done_images += len(task.images)
    rate = done_images / max(time.time() - start, 1e-6)
    eta = (total_images - done_images) / max(rate, 1e-6)
    log(f"  shard {len(reports)}/{len(tasks)} ({task.split} {task.index + 1}/{task.num_shards}): "
        f"{report['examples']} examples | {rate:.1f} images/s, ETA {_duration(eta)}")

  if num_workers <= 1 or len(tasks) <= 1:
    _init_worker()
    for task in tasks:
      progress(task, write_shard_task(task))
    return reports
  # spawn, not fork: the parent has TensorFlow loaded, and forking its threads is unsafe.
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(min(num_workers, len(tasks)), mp_context=context,
                                              initializer=_init_worker) as pool:
    futures = {pool.submit(write_shard_task, task): task for task in tasks}
    try:
      for future in concurrent.futures.as_completed(futures):
        progress(futures[future], future.result())
    except BaseException:
      pool.shutdown(cancel_futures=True)
      raise
  return reports


# --- the build ----------------------------------------------------------------------------------

def build(coco_dir: str, out_dir: str, year: str = "2014", center_crop: bool = False,
          num_validation_images: int = 4000, min_word_count: int = 5, max_caption_len: int = 24,
          num_shards: int = 16, num_workers: int = 0, seed: int = 0, max_train_images: int = 0,
          max_test_images: int = 0, overwrite: bool = False, log: Log = print) -> Dict:
  """Writes train/validation/test TFRecords, vocab.json, metadata.json and preview.png.

  Returns the metadata, with "last_run" saying how many shards this run wrote and kept.
  """
  flags_used = dict(coco_dir=os.path.abspath(coco_dir), year=year, center_crop=center_crop,
                    num_validation_images=num_validation_images, min_word_count=min_word_count,
                    max_caption_len=max_caption_len, num_shards=num_shards,
                    num_workers=num_workers, seed=seed, max_train_images=max_train_images,
                    max_test_images=max_test_images)
  if seed < 0 or num_shards < 1 or max_caption_len < 2 or min_word_count < 1:
    raise ValueError(f"need seed >= 0, num_shards >= 1, max_caption_len >= 2, "
                     f"min_word_count >= 1; got {flags_used}")
  num_workers = num_workers or os.cpu_count() or 1
  start = time.time()
  splits, sources = load_and_split(coco_dir, year, max_caption_len, num_validation_images, seed,
                                   max_train_images, max_test_images)
  for source in sources.values():
    log(f"read {source.name}: {source.stats['images_used']} images with "
        f"{source.stats['captions_used']} usable captions ({time.time() - start:.1f}s)")
  vocab = build_vocabulary(splits["train"], min_word_count)
  tasks = plan_shards(out_dir, splits, vocab, num_shards, seed, max_caption_len, center_crop,
                      year)

  os.makedirs(os.path.join(out_dir, _REPORT_DIR), exist_ok=True)
  stray = _stray_files(out_dir, tasks)
  if stray and not overwrite:
    raise tfrecords.DataError(
        f"{out_dir} holds {len(stray)} shard file(s) this build would not write (another "
        f"--num_shards or an older build), e.g. {stray[0]}; pass --overwrite to delete them or "
        "choose another --out_dir")
  if overwrite:
    _clear_outputs(out_dir)
    os.makedirs(os.path.join(out_dir, _REPORT_DIR), exist_ok=True)
  vocab.save(os.path.join(out_dir, "vocab.json"))

  existing = [_existing_report(t) for t in tasks]
  pending = [t for t, report in zip(tasks, existing) if report is None]
  if len(pending) < len(tasks):
    log(f"kept {len(tasks) - len(pending)} complete shard(s) from an earlier run")
  changed = sum(os.path.exists(t.path) for t in pending)
  if changed:
    log(f"rewriting {changed} existing shard(s) whose inputs or settings changed")
  log(f"writing {len(pending)} of {len(tasks)} shard(s) with "
      f"{max(1, min(num_workers, len(pending)))} worker(s)")
  reports = [r for r in existing if r is not None] + run_tasks(pending, num_workers, log)

  counts = {s: 0 for s in splits}
  image_counts = {s: 0 for s in splits}
  problems = [p for source in sources.values() for p in source.problems]
  for report in reports:
    counts[report["split"]] += report["examples"]
    image_counts[report["split"]] += report["images"]
    problems += report["problems"]
  problems.sort(key=_problem_order)
  metadata = {
      "dataset": "coco", "image_side": SIDE, "year": year, "seed": seed,
      "splits": {s: n for s, n in counts.items() if n},
      "images": {s: n for s, n in image_counts.items() if n},
      "num_shards": shard_counts({k: len(v) for k, v in splits.items()}, num_shards),
      "vocab_size": len(vocab), "min_word_count": min_word_count,
      "max_caption_len": max_caption_len, "center_crop": center_crop,
      "captions_per_image": CAPTIONS_PER_IMAGE,
      "problems": problems,
      "sources": {s.name: {"stats": s.stats, "skipped_captions": {
          reason: {"count": len(ids), "annotation_ids": ids[:_MAX_LISTED_IDS]}
          for reason, ids in s.skipped.items()}} for s in sources.values()},
      "flags": flags_used,
      "last_run": {"shards_written": len(pending), "shards_kept": len(tasks) - len(pending),
                   "seconds": round(time.time() - start, 1)},
  }
  layout.write_metadata(out_dir, metadata)
  preview = write_preview(out_dir, list(metadata["splits"]))
  log(f"wrote {sum(counts.values())} examples to {out_dir} in {time.time() - start:.1f}s; "
      f"vocabulary {len(vocab)} words; preview {preview}")
  return metadata


def write_preview(out_dir: str, splits: Sequence[str], per_split: int = 4) -> str:
  """A grid of the first examples of every split with their cleaned captions, read back."""
  images, captions = [], []
  for split in splits:
    data = tfrecords.load_split(out_dir, split, limit=per_split)
    for image, caption in zip(data["image"], data["caption"]):
      images.append(image)
      captions.append(f"[{split}] {caption.decode('utf-8')}")
  picture = pictures.tile_grid(np.stack(images), captions, cols=per_split, scale=4)
  return pictures.save(picture, os.path.join(out_dir, "preview.png"))


def summary(out_dir: str, max_problems: int = 20) -> str:
  meta = layout.read_metadata(out_dir)
  lines = [f"MS-COCO {meta['year']} in {out_dir}: vocabulary {meta['vocab_size']} words"]
  for name in [s for s in SPLITS if s in meta["splits"]]:
    count = meta["splits"][name]
    lines.append(f"  {name:10s} {count:7d} examples of {meta['images'][name]:6d} images")
  for source, info in meta["sources"].items():
    skipped = ", ".join(f"{v['count']} {k.replace('_', ' ')}"
                        for k, v in info["skipped_captions"].items())
    lines.append(f"  {source}: captions skipped: {skipped} (max_caption_len "
                 f"{meta['max_caption_len']}); {info['stats'].get('images_without_captions', 0)}"
                 " images without captions")
  problems = meta["problems"]
  lines.append(f"  problems: {len(problems)} (skipped; all listed in metadata.json)")
  for p in problems[:max_problems]:
    ids = f"image {p['image_id']}" if p["image_id"] is not None else "-"
    if p["annotation_id"] is not None:
      ids += f", annotation {p['annotation_id']}"
    where = f" {p['file']}:" if p["file"] else ":"
    lines.append(f"    {p['source']}: {p['kind']} ({ids}){where} {p['detail']}")
  if len(problems) > max_problems:
    lines.append(f"    ... and {len(problems) - max_problems} more")
  return "\n".join(lines)


def main(argv):
  del argv
  from absl import flags
  f = flags.FLAGS
  try:
    build(f.coco_dir, f.out_dir, year=f.year, center_crop=f.center_crop,
          num_validation_images=f.num_validation_images, min_word_count=f.min_word_count,
          max_caption_len=f.max_caption_len, num_shards=f.num_shards, num_workers=f.num_workers,
          seed=f.seed, max_train_images=f.max_train_images, max_test_images=f.max_test_images,
          overwrite=f.overwrite)
  except tfrecords.DataError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  print(summary(f.out_dir))
  return 0


def define_flags():
  from absl import flags
  flags.DEFINE_string("coco_dir", "workspace/coco_raw",
                      "the official release: annotations/captions_{train,val}YEAR.json and the "
                      "trainYEAR/, valYEAR/ image folders")
  flags.DEFINE_string("out_dir", "workspace/data/coco", "where to write the data set")
  flags.DEFINE_enum("year", "2014", list(YEARS), "which release's file names to read")
  flags.DEFINE_boolean("center_crop", False,
                       "crop a centred square before resizing (default: the paper's plain resize)")
  flags.DEFINE_integer("num_validation_images", 4000, "train images held out for validation")
  flags.DEFINE_integer("min_word_count", 5, "train-split count a word needs to get its own id")
  flags.DEFINE_integer("max_caption_len", 24,
                       "longest caption in tokens, <eos> included; longer ones are skipped")
  flags.DEFINE_integer("num_shards", 16,
                       "TFRecord shards of the train split; the others get proportionally fewer")
  flags.DEFINE_integer("num_workers", 0, "worker processes; 0 = one per CPU core")
  flags.DEFINE_integer("seed", 0, "random seed; the same seed and inputs give the same files")
  flags.DEFINE_integer("max_train_images", 0, "limit the train split to this many images (0 = all)")
  flags.DEFINE_integer("max_test_images", 0, "limit the test split to this many images (0 = all)")
  flags.DEFINE_boolean("overwrite", False, "delete an earlier build in out_dir instead of resuming")
  for name in ("num_validation_images", "num_workers", "seed", "max_train_images",
               "max_test_images"):
    flags.register_validator(name, lambda v: v is not None and v >= 0,
                             message=f"--{name} must be >= 0")
  for name in ("num_shards", "min_word_count"):
    flags.register_validator(name, lambda v: v is not None and v >= 1,
                             message=f"--{name} must be >= 1")


def run():
  from absl import app
  define_flags()
  app.run(main)


if __name__ == "__main__":
  sys.exit(run())
