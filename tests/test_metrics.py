"""Metrics on hand-computed cases: ranks and ties, R@K, median rank, SSIM, bits/dim, the table."""

import math

import numpy as np
import pytest

from numpy_references import ssim as _numpy_ssim
from text2pixel import metrics

# Rows are captions, columns pool images; caption i's own image is column i (default).
SCORES = np.array([
    [5., 1., 2., 3., 4.],   # own score 5, nothing higher          -> rank 1
    [1., 2., 9., 0., 3.],   # own score 2; 9 and 3 are higher       -> rank 3
    [4., 5., 6., 7., 8.],   # own score 6; 7 and 8 are higher       -> rank 3
    [9., 8., 7., 1., 2.],   # own score 1; 9, 8, 7, 2 are higher    -> rank 5
])


def test_ranks_and_recall_on_a_made_up_matrix():
  ranks = metrics.ranks_from_scores(SCORES)
  np.testing.assert_array_equal(ranks, [1., 3., 3., 5.])
  assert metrics.recall_at_k(ranks, ks=(1, 3, 4, 5)) == {1: 25.0, 3: 75.0, 4: 75.0, 5: 100.0}
  assert metrics.recall_at_k(ranks) == {1: 25.0, 5: 100.0, 10: 100.0, 50: 100.0}
  assert metrics.median_rank(ranks) == 3.0


def test_explicit_true_index():
  # Same matrix, but caption 3's own image is column 0 (score 9, the highest) -> rank 1.
  ranks = metrics.ranks_from_scores(SCORES, true_index=[0, 1, 2, 0])
  np.testing.assert_array_equal(ranks, [1., 3., 3., 1.])
  assert metrics.recall_at_k(ranks, ks=(1,)) == {1: 50.0}


def test_ties_count_half():
  scores = np.array([[3., 3., 3., 1., 5.],    # 1 higher, 2 tied -> 1 + 1 + 2/2 = 3
                     [2., 2., 0., 0., 0.]])   # 0 higher, 1 tied -> 1.5
  ranks = metrics.ranks_from_scores(scores, true_index=[0, 1])
  np.testing.assert_array_equal(ranks, [3.0, 1.5])
  # Rank 1.5 is not ranked first: no R@1 hit, but an R@2 hit.
  assert metrics.recall_at_k(ranks, ks=(1, 2, 3)) == {1: 0.0, 2: 50.0, 3: 100.0}
  # All equal: expected rank is the middle of the pool.
  assert metrics.ranks_from_scores(np.zeros((1, 5)))[0] == 3.0


def test_median_rank_with_ties_odd_and_even():
  assert metrics.median_rank([7., 2., 2.]) == 2.0                # odd: the middle one
  assert metrics.median_rank([9., 4., 1., 4.]) == 4.0            # even, tied middle pair
  assert metrics.median_rank([8., 1.5, 3., 1.5]) == 2.25         # even: mean of 1.5 and 3


def test_rank_input_checks():
  with pytest.raises(ValueError):
    metrics.ranks_from_scores(np.zeros(5))
  with pytest.raises(ValueError):
    metrics.ranks_from_scores(np.zeros((3, 2)))  # pool smaller than captions, no true_index
  with pytest.raises(ValueError):
    metrics.ranks_from_scores(np.zeros((2, 2)), true_index=[0, 2])
  with pytest.raises(ValueError):
    metrics.ranks_from_scores(np.array([[np.nan, 1.]]))


def test_ssim_identical_is_one_and_inverse_is_negative():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (32, 32), dtype=np.uint8)
  same = metrics.ssim_stats(image[None, None], image[None])
  assert same.mean == pytest.approx(1.0, abs=1e-5)
  assert same.std == pytest.approx(0.0, abs=1e-6)
  # b = 255 - a has cov(a, b) = -var(a) and var(b) = var(a), so the contrast-structure term is
  # (c2 - 2 var) / (c2 + 2 var) < 0 wherever var > c2 / 2 (= 29.3; uniform noise has ~5400), and
  # the luminance term is in (0, 1] (~1 here, means ~127.5): SSIM is close to -1.
  inverse = 255 - image
  value = metrics.ssim_stats(inverse[None, None], image[None]).mean
  assert -1.0 <= value < -0.9
  assert value == pytest.approx(_numpy_ssim(inverse, image), abs=1e-4)


def test_ssim_matches_the_formula_on_a_digit_like_image():
  rng = np.random.default_rng(1)
  a = np.zeros((32, 32), np.uint8)
  a[8:24, 12:20] = 200
  b = np.clip(a.astype(int) + rng.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
  value = metrics.ssim_stats(b[None, None], a[None]).mean
  assert value == pytest.approx(_numpy_ssim(b, a), abs=1e-4)


def test_ssim_mean_and_std_on_constant_images():
  # Constant images: both variances are 0, the contrast-structure term is c2 / c2 = 1, and SSIM
  # is the luminance term. Black vs white: c1 / (255^2 + c1) with c1 = (0.01 * 255)^2.
  c1 = (0.01 * 255) ** 2
  v = c1 / (255 ** 2 + c1)
  black, white = np.zeros((32, 32), np.uint8), np.full((32, 32), 255, np.uint8)
  samples = np.stack([np.stack([black, black]), np.stack([white, black])])  # [2 captions, 2, ...]
  references = np.stack([black, black])
  stats = metrics.ssim_stats(samples, references)
  # Values [1, 1, v, 1]: mean (3 + v) / 4, population std sqrt(3) (1 - v) / 4.
  assert stats.mean == pytest.approx((3 + v) / 4, abs=1e-6)
  assert stats.std == pytest.approx(math.sqrt(3) * (1 - v) / 4, abs=1e-6)
  assert stats.settings["filter_size"] == 11 and stats.settings["max_val"] == 255.0
  assert stats.settings["num_pairs"] == 4
  np.testing.assert_allclose(metrics.ssim_values(samples, references),
                             [[1, 1], [v, 1]], atol=1e-6)


def test_ssim_chunks_do_not_change_values():
  rng = np.random.default_rng(2)
  samples = rng.integers(0, 256, (3, 4, 32, 32), dtype=np.uint8)
  references = rng.integers(0, 256, (3, 32, 32), dtype=np.uint8)
  whole = metrics.ssim_values(samples, references)
  np.testing.assert_allclose(metrics.ssim_values(samples, references, chunk=5), whole, atol=1e-6)
  assert whole.shape == (3, 4)


def test_ssim_input_checks():
  with pytest.raises(ValueError):
    metrics.ssim_stats(np.zeros((2, 1, 32, 32), np.uint8), np.zeros((3, 32, 32), np.uint8))
  with pytest.raises(ValueError):
    metrics.ssim_stats(np.zeros((1, 1, 32, 32), np.float32), np.zeros((1, 32, 32), np.uint8))


def test_bits_per_dim():
  assert metrics.bits_per_dim(1024 * math.log(2), 1024) == pytest.approx(1.0)
  assert metrics.nats_per_dim(2048.0, 1024) == pytest.approx(2.0)
  assert metrics.nats_to_bits(math.log(2)) == pytest.approx(1.0)
  assert metrics.bits_to_nats(1.0) == pytest.approx(math.log(2))
  np.testing.assert_allclose(metrics.bits_per_dim(np.array([0.0, 3072 * math.log(2)]), 1024),
                             [0.0, 3.0])
  with pytest.raises(ValueError):
    metrics.bits_per_dim(1.0, 0)


def test_format_table_in_the_papers_layout():
  row = metrics.table_row("PixelRNN (Mnist)", ranks=np.array([1., 3., 3., 5.]),
                          ssim=(0.3564, 0.3512))
  table = metrics.format_table([row, {"Model": "alignDRAW", "R@1": 3.0}])
  assert table.splitlines() == [
      "| Model | R@1 | R@5 | R@10 | R@50 | Med r | SSI |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
      "| PixelRNN (Mnist) | 25.0 | 100.0 | 100.0 | 100.0 | 3 | 0.356 ± 0.35 |",
      "| alignDRAW | 3.0 | – | – | – | – | – |",
  ]
