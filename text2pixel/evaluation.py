"""Evaluation as in the paper's Tables 1 and 2: bits/dim, retrieval R@K, SSIM, and a digit judge.

Retrieval follows alignDRAW (Mansimov et al., 2016, section 6.2), whose procedure the paper says
it "closely followed": for each test caption, the test images of a pool are ranked by the
model's score for that caption and the rank of the caption's own image is recorded. alignDRAW
ranks by a variational lower bound; this model has the exact log p(x | y), which is used instead.
We also report the caption-normalised score log p(x | y) - log p(x | <empty caption>), which
removes the model's preference for images that are simply easy (mostly black).

SSIM: for each test caption, S samples (ancestral, temperature T) compared with the caption's own
image, mean ± std over all (caption, sample) pairs, as the paper's "0.356 ± 0.35".
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Callable, Dict, Optional

import numpy as np

from text2pixel import atomic, layout, metrics, text as text_lib, tfrecords
from text2pixel.generation import Generator

Log = Callable[[str], None]


class Progress:
  """A one-line progress report with rate and ETA, printed every ``every`` seconds."""

  def __init__(self, what: str, total: int, log: Log, every: float = 10.0):
    self.what, self.total, self.log, self.every = what, total, log, every
    self.start = self.last = time.time()
    self.done = 0

  def update(self, done: int, already: int = 0):
    self.done = done
    now = time.time()
    if now - self.last >= self.every or done >= self.total:
      rate = (done - already) / max(now - self.start, 1e-9)
      eta = (self.total - done) / max(rate, 1e-9)
      self.log(f"  {self.what}: {done}/{self.total} ({100 * done / self.total:.0f}%), "
               f"{rate:.1f}/s, ETA {eta / 60:.1f} min")
      self.last = now


def split_examples(data_dir: str, split: str, image_side: int, limit: Optional[int],
                   max_len: int) -> Dict[str, np.ndarray]:
  data = tfrecords.load_split(data_dir, split, image_side, limit=limit)
  data["ids"] = tfrecords.pad_ids(list(data["caption_ids"]), max_len)
  data["lengths"] = np.array([len(x) for x in data["caption_ids"]], np.int32)
  data["captions"] = [c.decode("utf-8") for c in data["caption"]]
  return data


def bits_per_dim(generator: Generator, data: Dict[str, np.ndarray], batch: int, log: Log
                 ) -> Dict[str, float]:
  """Exact teacher-forced NLL of every (caption, image) pair of the split."""
  n = len(data["image"])
  nll = np.zeros(n, np.float64)
  progress = Progress("bits/dim", n, log)
  for start in range(0, n, batch):
    end = min(n, start + batch)
    nll[start:end] = -generator.log_likelihood(data["ids"][start:end], data["lengths"][start:end],
                                               data["image"][start:end])
    progress.update(end)
  pixels = data["image"].shape[1] * data["image"].shape[2]
  return {"examples": n, "nll_nats_per_image": float(nll.mean()),
          "bits_per_dim": float(metrics.bits_per_dim(nll.mean(), pixels))}


def score_matrix(generator: Generator, ids: np.ndarray, lengths: np.ndarray, images: np.ndarray,
                 pairs_per_batch: int, cache_path: Optional[str], log: Log,
                 what: str = "retrieval") -> np.ndarray:
  """scores[i, j] = log p(images[j] | caption i), in blocks, resumable through cache_path.

  After every block of captions the finished rows are saved (atomically); a restarted run with
  the same inputs continues from the first unfinished row.
  """
  num_captions, pool = len(ids), len(images)
  image_block = min(pool, max(1, pairs_per_batch))
  caption_block = max(1, pairs_per_batch // image_block)
  scores = np.full((num_captions, pool), np.nan, np.float32)
  done_rows = 0
  key = hashlib.sha256(ids.tobytes() + lengths.tobytes() + images.tobytes()).hexdigest()[:16]
  if cache_path and os.path.exists(cache_path + ".npz"):
    saved = np.load(cache_path + ".npz")
    if str(saved["key"]) == key:
      done_rows = int(saved["done_rows"])
      scores[:done_rows] = saved["scores"][:done_rows]
      log(f"  {what}: resuming at caption {done_rows}/{num_captions} from {cache_path}.npz")
  progress = Progress(f"{what} scoring (captions x {pool} images)", num_captions, log)
  for start in range(done_rows, num_captions, caption_block):
    end = min(num_captions, start + caption_block)
    for image_start in range(0, pool, image_block):
      image_end = min(pool, image_start + image_block)
      scores[start:end, image_start:image_end] = generator.score_ids(
          ids[start:end], lengths[start:end], images[image_start:image_end])
    if cache_path:
      with atomic.writing(cache_path + ".npz", ".tmp.npz") as temp:  # savez adds .npz to a name without it
        np.savez(temp, scores=scores, done_rows=end, key=key)
    progress.update(end, already=done_rows)
  return scores


def retrieval(generator: Generator, data: Dict[str, np.ndarray], num_captions: int, pool: int,
              pairs_per_batch: int, cache_dir: Optional[str], log: Log) -> Dict:
  """R@K and median rank of each caption's own image among ``pool`` test images (one caption per
  image: caption i belongs to image i)."""
  pool = min(pool, len(data["image"]))
  num_captions = min(num_captions, pool)
  images = data["image"][:pool]
  ids, lengths = data["ids"][:num_captions], data["lengths"][:num_captions]
  cache = (lambda name: os.path.join(cache_dir, name)) if cache_dir else (lambda name: None)
  conditional = score_matrix(generator, ids, lengths, images, pairs_per_batch,
                             cache("scores_conditional"), log)
  empty = tfrecords.pad_ids([[text_lib.EOS_ID]], generator.config.max_caption_len)
  unconditional = score_matrix(generator, empty, np.array([1], np.int32), images,
                               pairs_per_batch, cache("scores_empty_caption"), log,
                               what="empty-caption")[0]
  out = {"pool": pool, "captions": num_captions}
  for name, scores in (("log p(x|y)", conditional),
                       ("log p(x|y) - log p(x|empty)", conditional - unconditional[None])):
    ranks = metrics.ranks_from_scores(scores)
    out[name] = {"ranks": ranks.tolist(), "recall": metrics.recall_at_k(ranks),
                 "median_rank": metrics.median_rank(ranks)}
  return out


def samples_for(generator: Generator, captions, num_samples: int, temperature: float, seed: int,
                batch_captions: int, log: Log, what: str) -> np.ndarray:
  images = []
  progress = Progress(f"sampling {num_samples} per caption ({what})", len(captions), log)
  for start in range(0, len(captions), batch_captions):
    chunk = captions[start:start + batch_captions]
    out = generator.generate(chunk, "sample", num_samples=num_samples, temperature=temperature,
                             seed=seed + start)
    images.append(out["images"])
    progress.update(start + len(chunk))
  return np.concatenate(images)


def evaluate(generator: Generator, data_dir: str, out_dir: str, num_captions: int = 1000,
             pool: int = 1000, ssim_captions: int = 100, ssim_samples: int = 50,
             temperature: float = 1.0, seed: int = 0, pairs_per_batch: int = 256,
             sample_batch: int = 8, bpd_examples: Optional[int] = None,
             judge_cache: str = "workspace/judge", model_name: str = "alignPixelRNN",
             log: Log = print) -> Dict:
  """Every figure of the tables for one model; writes results.json and results.md in out_dir."""
  config = generator.config
  meta = layout.read_metadata(data_dir)
  layout.check_model_vocabulary(generator.vocab, data_dir)
  os.makedirs(out_dir, exist_ok=True)
  need = max(num_captions, pool, ssim_captions, bpd_examples or 0)
  test = split_examples(data_dir, "test", config.image_side, need, config.max_caption_len)
  results: Dict = {"model": model_name, "data_dir": data_dir, "dataset": meta.get("dataset"),
                   "config": json.loads(config.to_json())}
  started = time.time()

  log("bits/dim on the test split (exact, teacher forced)")
  bpd_data = {k: v[:bpd_examples] if bpd_examples else v for k, v in test.items()}
  results["bits_per_dim"] = bits_per_dim(generator, bpd_data, pairs_per_batch, log)

  log(f"retrieval: {min(num_captions, pool)} captions x a pool of {pool} test images")
  results["retrieval"] = retrieval(generator, test, num_captions, pool, pairs_per_batch, out_dir,
                                   log)

  guidance = config.guidance
  log(f"SSIM: {ssim_captions} captions x {ssim_samples} samples at temperature {temperature}"
      + (f", classifier-free guidance {guidance:g}" if guidance != 1.0 else ""))
  captions = test["captions"][:ssim_captions]
  samples = samples_for(generator, captions, ssim_samples, temperature, seed, sample_batch, log,
                        "test")
  ssim = metrics.ssim_stats(samples, test["image"][:ssim_captions])
  results["ssim"] = {"mean": ssim.mean, "std": ssim.std, "settings": ssim.settings,
                     "captions": len(captions), "samples_per_caption": ssim_samples,
                     "temperature": temperature, "guidance": guidance}
  with atomic.writing(os.path.join(out_dir, "ssim_samples.npy"), ".tmp.npy") as temp:
    np.save(temp, samples)  # (np.save adds .npy to a name without it)

  if meta.get("dataset") == "mnist_captions" and config.image_side == tfrecords.STORED_SIDE:
    results["judge"] = judge_figures(generator, data_dir, test, samples, ssim_captions,
                                     ssim_samples, temperature, seed, sample_batch,
                                     judge_cache, log)
  results["minutes"] = (time.time() - started) / 60
  write_report(results, out_dir, test, samples)
  return results


def judge_figures(generator, data_dir, test, samples, num_captions, num_samples, temperature,
                  seed, sample_batch, judge_cache, log) -> Dict:
  """Digit-judge accuracy of samples for in-distribution and for held-out captions."""
  from text2pixel import judge as judge_lib
  judge = judge_lib.load_or_train_judge(judge_cache, num_threads=0, log=log)
  heldout = split_examples(data_dir, "heldout", generator.config.image_side, num_captions,
                           generator.config.max_caption_len)
  heldout_samples = samples_for(generator, heldout["captions"], num_samples, temperature,
                                seed + 1, sample_batch, log, "held-out")
  out = {"judge_test_accuracy_on_mnist": judge.info["test_accuracy"]}
  for name, data, images in (("test", test, samples[:num_captions]),
                             ("heldout", heldout, heldout_samples)):
    count = len(images)
    flat = images.reshape(-1, *images.shape[2:])
    repeat = images.shape[1]
    relations = np.repeat(data["relation"][:count], repeat)
    digits = [d for d in data["digits"][:count] for _ in range(repeat)]
    out[name] = judge_lib.judge_accuracy(judge, flat, relations, digits)
    # The data's own images, judged the same way: the ceiling the samples are measured against.
    out[name + "_ground_truth"] = judge_lib.judge_accuracy(
        judge, data["image"][:count], data["relation"][:count], list(data["digits"][:count]))
  return out


def write_report(results: Dict, out_dir: str, test, samples) -> None:
  from text2pixel import pictures
  rows = []
  for name in ("log p(x|y)", "log p(x|y) - log p(x|empty)"):
    r = results["retrieval"][name]
    label = "ranked by log p(x\\|y)" if name == "log p(x|y)" else \
        "ranked by log p(x\\|y) − log p(x\\|∅)"
    row = {"Model": f"{results['model']}, {label}", "Med r": r["median_rank"]}
    row.update({f"R@{k}": v for k, v in r["recall"].items()})
    if name == "log p(x|y)":
      row["SSI"] = (results["ssim"]["mean"], results["ssim"]["std"])
    rows.append(row)
  table = metrics.format_table(rows)
  lines = [f"# Evaluation: {results['model']}", "",
           f"Data: `{results['data_dir']}` ({results['dataset']}), test split.", "",
           table, "",
           f"- bits/dim (exact, {results['bits_per_dim']['examples']} test pairs): "
           f"**{results['bits_per_dim']['bits_per_dim']:.4f}** "
           f"(NLL {results['bits_per_dim']['nll_nats_per_image']:.1f} nats per image)",
           f"- retrieval: {results['retrieval']['captions']} captions, each ranking a pool of "
           f"{results['retrieval']['pool']} test images (its own among them) by exact log p(x|y)",
           f"- SSIM: {results['ssim']['captions']} captions x "
           f"{results['ssim']['samples_per_caption']} samples, temperature "
           f"{results['ssim']['temperature']}"
           + (f", classifier-free guidance {results['ssim']['guidance']:g}"
              if results['ssim'].get('guidance', 1.0) != 1.0 else "")
           + "; tf.image.ssim settings "
           f"{json.dumps(results['ssim']['settings'])}"]
  if "judge" in results:
    j = results["judge"]
    lines += [f"- digit judge (MNIST test accuracy {j['judge_test_accuracy_on_mnist']:.4f}): "
              f"samples correct **{100 * j['test']['accuracy']:.1f}%** for test captions "
              f"(data itself: {100 * j['test_ground_truth']['accuracy']:.1f}%), "
              f"**{100 * j['heldout']['accuracy']:.1f}%** for held-out combinations "
              f"(data itself: {100 * j['heldout_ground_truth']['accuracy']:.1f}%)"]
  lines += [f"- evaluation took {results['minutes']:.1f} min", "",
            "![samples](samples.png)", ""]
  shown = min(8, len(samples))
  grid = np.concatenate([test["image"][:shown, None], samples[:shown, :7]], axis=1)
  picture = pictures.caption_grid(grid, [f"{c}   (left: data; then samples)"
                                         for c in test["captions"][:shown]], scale=3)
  pictures.save(picture, os.path.join(out_dir, "samples.png"))
  atomic.write_text(os.path.join(out_dir, "results.md"), "\n".join(lines))
  slim = json.loads(json.dumps(results, default=float))
  for name in ("log p(x|y)", "log p(x|y) - log p(x|empty)"):
    slim["retrieval"][name].pop("ranks", None)
  atomic.write_json(os.path.join(out_dir, "ranks.json"),
                    {name: results["retrieval"][name]["ranks"]
                     for name in ("log p(x|y)", "log p(x|y) - log p(x|empty)")})
  # Last: a results.json on disk means the evaluation finished.
  atomic.write_json(os.path.join(out_dir, "results.json"), slim, indent=2, default=float)
