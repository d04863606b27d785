"""The fused pixel loop (text2pixel/kernels) against the TF-op loop and the samplers' cell."""

import numpy as np
import pytest
import tensorflow as tf

from text2pixel import config as config_lib, kernels, model as model_lib, sampling


def _logits_and_gradients(config, fast: bool, seed: int = 1, batch: int = 3):
  tf.keras.utils.set_random_seed(0)
  model = model_lib.build(config, vocab_size=20)
  rng = np.random.default_rng(seed)
  lens = rng.integers(2, config.max_caption_len + 1, size=batch).astype(np.int32)
  ids = np.zeros((batch, config.max_caption_len), np.int32)
  for i, n in enumerate(lens):
    ids[i, :n] = rng.integers(3, 20, size=n)
  images = tf.constant(rng.integers(0, 256, size=(batch, config.image_side, config.image_side))
                       .astype(np.uint8))

  @tf.function
  def run():
    with tf.GradientTape() as tape:
      annotations = model.encode(ids, lens)
      logits = (model.logits_from_annotations if fast else model.logits_stepwise)(
          annotations, lens, images)
      loss = model_lib.sequence_loss(logits, images, config.num_pixels)
    return logits, tape.gradient(loss, model.trainable_variables)

  logits, grads = run()
  return logits.numpy(), [tf.convert_to_tensor(g).numpy() for g in grads]


def test_the_graph_loop_equals_the_samplers_cell():
  """The TF-op loop (pixel_loop=graph): logits and every weight's gradient match plain autodiff
  through the samplers' cell in fp32. (tests/test_model.py checks the default, fused, loop for
  every conditioning.)"""
  config = config_lib.get_preset("tiny").replace(pixel_loop="graph")
  fast_logits, fast_grads = _logits_and_gradients(config, fast=True, batch=5)
  slow_logits, slow_grads = _logits_and_gradients(config, fast=False, batch=5)
  np.testing.assert_allclose(fast_logits, slow_logits, atol=1e-5)
  for fast, slow in zip(fast_grads, slow_grads):
    assert np.abs(slow).max() > 0
    np.testing.assert_allclose(fast, slow, atol=1e-5)


def test_batch_slices_on_threads_give_the_same_result():
  """Each thread runs its own slice of the batch: any thread count, any uneven split, the same."""
  rng = np.random.default_rng(3)
  batch, steps, units, words, dim, attention = 5, 7, 8, 4, 6, 3
  tables = tf.constant(rng.normal(size=(11, 4 * units)).astype(np.float32))
  ids = tf.constant(rng.integers(0, 11, size=(batch, steps, 2)).astype(np.int32))
  base = tf.constant(rng.normal(size=(batch, 4 * units)).astype(np.float32))
  w_rec = tf.constant(rng.normal(size=(attention + units, 4 * units)).astype(np.float32) * 0.3)
  keys = tf.constant(rng.normal(size=(batch, words, units)).astype(np.float32))
  values = tf.constant(rng.normal(size=(batch, words, dim)).astype(np.float32))
  mask = tf.constant((np.arange(words)[None] < rng.integers(1, words + 1, (batch, 1)))
                     .astype(np.float32))
  w_c = tf.constant(rng.normal(size=(units + dim, attention)).astype(np.float32) * 0.3)

  def run(threads):
    with tf.GradientTape() as tape:
      tape.watch([tables, base, w_rec, keys, values, w_c])
      out = kernels.pixel_loop(tables, ids, base, w_rec, keys, values, mask, w_c,
                               num_threads=threads)
      loss = tf.reduce_sum(out.attention * np.arange(attention)) + tf.reduce_sum(out.h ** 2)
    return [out.attention, out.alpha] + tape.gradient(loss, [tables, base, w_rec, keys, values,
                                                             w_c])

  one = run(1)
  for threads in (2, 3, 8):
    for a, b in zip(one, run(threads)):
      np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)
  alpha = one[1].numpy()
  assert np.all(alpha[mask.numpy()[:, None, :].repeat(steps, 1) == 0] == 0)  # padding: never
  np.testing.assert_allclose(alpha.sum(-1), 1.0, rtol=1e-5)


def test_a_table_row_outside_the_table_is_an_error():
  with pytest.raises(tf.errors.InvalidArgumentError, match="table row id"):
    kernels.pixel_loop(tf.zeros([4, 8]), tf.constant([[[4]]], tf.int32), tf.zeros([1, 8]),
                       tf.zeros([2, 8]))


@pytest.mark.parametrize("conditioning", config_lib.CONDITIONINGS)
def test_the_fused_decoder_scores_and_samples_like_the_samplers_cell(conditioning):
  """Scoring, greedy and ancestral decoding in one op give what the samplers' cell under tfa's
  decoders gives (the export's path): the same log-likelihoods, the same images for the same
  seed, the same attention, over batch slices on two threads (5 rows: an uneven split)."""
  config = config_lib.get_preset("tiny").replace(conditioning=conditioning)
  tf.keras.utils.set_random_seed(2)
  model = model_lib.build(config, vocab_size=30)
  rng = np.random.default_rng(4)
  lengths = tf.constant([4, 9, 16], tf.int32)
  ids = tf.constant(rng.integers(3, 30, [3, config.max_caption_len]), tf.int32)
  images = tf.constant(rng.integers(0, 256, [5, 8, 8]), tf.uint8)
  fused = model.log_likelihood_matrix(ids, lengths, images, loop="fused").numpy()
  graph = model.log_likelihood_matrix(ids, lengths, images, loop="graph").numpy()
  assert fused.shape == (3, 5)
  np.testing.assert_allclose(fused, graph, rtol=1e-6)
  np.testing.assert_allclose(model.log_likelihood(ids, lengths, images[:3], loop="fused"),
                             np.diag(graph), rtol=1e-6)
  for method, temperature in (("greedy", 1.0), ("sample", 1.0), ("sample", 0.7)):
    out = {loop: sampling.generate(model, ids, lengths, method, num_samples=2, seed=9,
                                   temperature=temperature, loop=loop)
           for loop in ("fused", "graph")}
    np.testing.assert_array_equal(out["fused"]["images"], out["graph"]["images"], method)
    np.testing.assert_allclose(out["fused"]["log_prob"], out["graph"]["log_prob"], rtol=1e-6)
    np.testing.assert_allclose(out["fused"]["attention"], out["graph"]["attention"], atol=1e-6)
    if method == "sample":  # a real draw: many values, and another seed draws another image
      assert len(np.unique(out["fused"]["images"])) > 100
      other = sampling.generate(model, ids, lengths, method, num_samples=2, seed=10,
                                temperature=temperature, loop="fused")
      assert not np.array_equal(other["images"], out["fused"]["images"])


def test_the_fused_decoder_refuses_targets_outside_the_levels():
  config = config_lib.get_preset("tiny").replace(conditioning="none")
  model = model_lib.build(config, vocab_size=30)
  with pytest.raises(tf.errors.InvalidArgumentError, match="target 256 outside"):
    model.decode_fused(None, tf.constant([3]), "score", targets=tf.fill([1, 64], 256))
