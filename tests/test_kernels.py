"""The fused pixel loop (text2pixel/kernels) against the TF-op loop and the samplers' cell."""

import numpy as np
import pytest
import tensorflow as tf

from text2pixel import config as config_lib, kernels, model as model_lib


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
