"""Evaluation metrics of the paper's Tables 1 and 2: retrieval recall, median rank, SSIM, bits/dim.

Pure functions on numpy arrays (SSIM through ``tf.image.ssim``); nothing here knows the model.

Retrieval (alignDRAW's protocol, followed by the paper): every test caption scores a pool of test
images by the model's log-likelihood log p(image | caption); the rank of the caption's own image in
that pool gives R@K (the percentage of captions whose own image is ranked K or better) and the
median rank ("Med r").

Tie convention (explicit, since a model that saturates can give equal scores): the rank of the true
image is its *expected* rank under uniformly random tie-breaking,

    rank = 1 + #(pool images scoring strictly higher) + #(other pool images scoring equal) / 2,

so ranks are floats (x.0 or x.5). R@K counts a caption when rank <= K, so a true image tied with
one other image for first place (rank 1.5) is not an R@1 hit but is an R@5 hit.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

LN2 = math.log(2.0)

RECALL_KS = (1, 5, 10, 50)
TABLE_COLUMNS = ("Model", "R@1", "R@5", "R@10", "R@50", "Med r", "SSI")

# tf.image.ssim's documented defaults; the images are uint8, so the dynamic range is 255.
SSIM_SETTINGS = {"max_val": 255.0, "filter_size": 11, "filter_sigma": 1.5, "k1": 0.01,
                 "k2": 0.03}


# --- retrieval ----------------------------------------------------------------------------------

def ranks_from_scores(scores: np.ndarray, true_index: Optional[Sequence[int]] = None
                      ) -> np.ndarray:
  """Rank of each caption's true image among the pool.

  Args:
    scores: [num_captions, pool]; scores[i, j] = log p(image j | caption i) (higher = better).
    true_index: [num_captions] column of caption i's own image; default i (the pool is the
      captions' own images, in the same order).

  Returns:
    float64 [num_captions]: 1 + #strictly higher + #ties / 2 (module docstring), in [1, pool].
  """
  scores = np.asarray(scores, np.float64)
  if scores.ndim != 2:
    raise ValueError(f"scores must be [num_captions, pool], got shape {scores.shape}")
  num_captions, pool = scores.shape
  if true_index is None:
    if pool < num_captions:
      raise ValueError(f"without true_index the pool ({pool}) must hold every caption's image "
                       f"({num_captions} captions)")
    true_index = np.arange(num_captions)
  true_index = np.asarray(true_index, np.int64)
  if true_index.shape != (num_captions,):
    raise ValueError(f"true_index must be [{num_captions}], got shape {true_index.shape}")
  if true_index.min(initial=0) < 0 or true_index.max(initial=0) >= pool:
    raise ValueError(f"true_index out of range for a pool of {pool}")
  if np.isnan(scores).any():
    raise ValueError("scores contain NaN; a rank would be meaningless")
  true_scores = scores[np.arange(num_captions), true_index][:, None]
  higher = (scores > true_scores).sum(axis=1)
  ties = (scores == true_scores).sum(axis=1) - 1  # minus the true image itself
  return 1.0 + higher + ties / 2.0


def recall_at_k(ranks: np.ndarray, ks: Sequence[int] = RECALL_KS) -> Dict[int, float]:
  """{K: percentage of captions with rank <= K}, as in the paper's tables (R@1 = % ranked 1)."""
  ranks = np.asarray(ranks, np.float64)
  if ranks.size == 0:
    raise ValueError("no ranks")
  return {int(k): float(100.0 * np.mean(ranks <= k)) for k in ks}


def median_rank(ranks: np.ndarray) -> float:
  """Median rank ("Med r"); with an even count, the mean of the two middle ranks."""
  ranks = np.asarray(ranks, np.float64)
  if ranks.size == 0:
    raise ValueError("no ranks")
  return float(np.median(ranks))


# --- SSIM ---------------------------------------------------------------------------------------

class SsimStats(NamedTuple):
  mean: float
  std: float          # population std (ddof=0) over all (caption, sample) pairs
  settings: Dict[str, Any]


def ssim_settings_for(h: int, w: int) -> Dict[str, Any]:
  """SSIM_SETTINGS, with the window shrunk to the image for images under 11 pixels (tests' 8x8)."""
  return dict(SSIM_SETTINGS, filter_size=min(SSIM_SETTINGS["filter_size"], h, w))


def ssim_values(samples: np.ndarray, references: np.ndarray, chunk: int = 4096) -> np.ndarray:
  """SSIM of each sample with its caption's reference: float64 [num_captions, num_samples]."""
  import tensorflow as tf  # lazy: the rank metrics do not need TensorFlow
  samples = np.asarray(samples)
  references = np.asarray(references)
  if samples.ndim != 4 or references.ndim != 3:
    raise ValueError(f"samples must be [captions, samples, H, W] and references [captions, H, W]; "
                     f"got {samples.shape} and {references.shape}")
  if samples.shape[0] != references.shape[0] or samples.shape[2:] != references.shape[1:]:
    raise ValueError(f"samples {samples.shape} do not match references {references.shape}")
  if samples.dtype != np.uint8 or references.dtype != np.uint8:
    raise ValueError(f"images must be uint8, got {samples.dtype} and {references.dtype}")
  num_captions, num_samples, h, w = samples.shape
  # Pair every sample with its reference, flattened so chunks are plain batches.
  flat = samples.reshape(-1, h, w)
  paired = np.repeat(references, num_samples, axis=0)
  out = np.empty(flat.shape[0], np.float64)
  s = ssim_settings_for(h, w)
  for start in range(0, flat.shape[0], chunk):  # chunked: bounded memory for 50 x 2000 pairs
    a = tf.constant(flat[start:start + chunk, :, :, None], tf.float32)
    b = tf.constant(paired[start:start + chunk, :, :, None], tf.float32)
    values = tf.image.ssim(a, b, max_val=s["max_val"], filter_size=s["filter_size"],
                           filter_sigma=s["filter_sigma"], k1=s["k1"], k2=s["k2"])
    out[start:start + chunk] = values.numpy()
  return out.reshape(num_captions, num_samples)


def ssim_stats(samples: np.ndarray, references: np.ndarray, chunk: int = 4096) -> SsimStats:
  """Mean and std of SSIM over all (caption, sample) pairs, plus the settings used.

  samples [num_captions, num_samples, H, W] uint8 (e.g. 50 samples per test caption, as the
  paper), references [num_captions, H, W] uint8 (each caption's test image). SSIM is
  ``tf.image.ssim`` on the full images with SSIM_SETTINGS (max_val 255, Gaussian window 11 / 1.5,
  k1 0.01, k2 0.03, 'valid' windows, averaged over the SSIM map).
  """
  values = ssim_values(samples, references, chunk)
  settings = dict(ssim_settings_for(*references.shape[1:]), image_shape=list(references.shape[1:]),
                  num_pairs=int(values.size), std="population (ddof=0) over all pairs")
  return SsimStats(float(values.mean()), float(values.std()), settings)


# --- likelihood units ---------------------------------------------------------------------------

def nats_to_bits(nats: Union[float, np.ndarray]) -> Union[float, np.ndarray]:
  return nats / LN2


def bits_to_nats(bits: Union[float, np.ndarray]) -> Union[float, np.ndarray]:
  return bits * LN2


def nats_per_dim(nll_nats_per_image: Union[float, np.ndarray], num_pixels: int
                 ) -> Union[float, np.ndarray]:
  """Negative log-likelihood of an image in nats -> nats per pixel."""
  if num_pixels <= 0:
    raise ValueError(f"num_pixels must be positive, got {num_pixels}")
  return nll_nats_per_image / num_pixels


def bits_per_dim(nll_nats_per_image: Union[float, np.ndarray], num_pixels: int
                 ) -> Union[float, np.ndarray]:
  """Negative log-likelihood of an image in nats -> bits per pixel (the PixelRNN unit)."""
  return nats_to_bits(nats_per_dim(nll_nats_per_image, num_pixels))


# --- tables -------------------------------------------------------------------------------------

def table_row(model: str, ranks: Optional[np.ndarray] = None,
              ssim: Optional[Union[SsimStats, Tuple[float, float]]] = None) -> Dict[str, Any]:
  """One row for format_table from ranks and SSIM stats (either may be missing)."""
  row: Dict[str, Any] = {"Model": model}
  if ranks is not None:
    for k, value in recall_at_k(ranks).items():
      row[f"R@{k}"] = value
    row["Med r"] = median_rank(ranks)
  if ssim is not None:
    row["SSI"] = (float(ssim[0]), float(ssim[1]))
  return row


def _cell(column: str, value: Any) -> str:
  if value is None:
    return "–"
  if column == "SSI" and isinstance(value, (tuple, list)):
    mean, std = value
    return f"{mean:.3f} ± {std:.2f}"  # the paper's layout: "0.356 ± 0.35"
  if isinstance(value, (float, np.floating)):
    if column == "Med r" and float(value).is_integer():
      return str(int(value))
    return f"{value:.1f}"
  return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = TABLE_COLUMNS
                 ) -> str:
  """A Markdown table in the paper's layout; a missing value is written as '–'.

  Each row maps column name -> value: recalls are percentages (one decimal), "Med r" a rank,
  "SSI" a (mean, std) pair written "0.356 ± 0.35".
  """
  lines = ["| " + " | ".join(columns) + " |",
           "| " + " | ".join("---" if c == "Model" else "---:" for c in columns) + " |"]
  for row in rows:
    lines.append("| " + " | ".join(_cell(c, row.get(c)) for c in columns) + " |")
  return "\n".join(lines)
