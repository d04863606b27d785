"""Independent numpy versions of what the project computes, for tests to compare against."""

import math

import numpy as np


def ssim(a, b, max_val=255., size=11, sigma=1.5, k1=0.01, k2=0.03):
  """The SSIM formula written out (Gaussian window, 'valid' positions, mean of the map)."""
  a, b = a.astype(np.float64), b.astype(np.float64)
  coords = np.arange(size) - (size - 1) / 2
  g = np.exp(-0.5 * coords ** 2 / sigma ** 2)
  w = np.outer(g, g) / np.outer(g, g).sum()
  c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
  values = []
  for i in range(a.shape[0] - size + 1):
    for j in range(a.shape[1] - size + 1):
      pa, pb = a[i:i + size, j:j + size], b[i:i + size, j:j + size]
      ma, mb = (w * pa).sum(), (w * pb).sum()
      va, vb = (w * pa * pa).sum() - ma ** 2, (w * pb * pb).sum() - mb ** 2
      cov = (w * pa * pb).sum() - ma * mb
      values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) *
                                                         (va + vb + c2)))
  return float(np.mean(values))


def bits_per_dim(logits, images):
  """-mean over pixels of log2 p(pixel), from the model's logits [N, pixels, 256]."""
  logits = np.asarray(logits, np.float64)
  log_probs = logits - logits.max(-1, keepdims=True)
  log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
  targets = np.asarray(images).reshape(len(logits), -1).astype(np.int64)
  picked = np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  return float(-picked.mean() / math.log(2))


def rank_of_own_image(scores):
  """scores[i, j] = log p(image j | caption i); caption i's own image is j = i. Rank 1 is best;
  an image scoring the same as the own one counts half (the project's tie rule)."""
  scores = np.asarray(scores, np.float64)
  ranks = []
  for i, row in enumerate(scores):
    others = np.delete(row, i)
    ranks.append(1 + np.count_nonzero(others > row[i]) + np.count_nonzero(others == row[i]) / 2)
  return np.array(ranks)
