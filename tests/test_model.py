"""The model: causality, a real tiny training run whose loss falls, and exact resumption."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from text2pixel import config as config_lib, layout, model as model_lib, text as text_lib, training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _captions(vocab_size, batch, length, rng):
  ids = np.zeros((batch, length), np.int32)
  lens = rng.integers(3, length, size=batch).astype(np.int32)
  for i, n in enumerate(lens):
    ids[i, :n - 1] = rng.integers(3, vocab_size, size=n - 1)
    ids[i, n - 1] = 2
  return ids, lens


@pytest.mark.parametrize("conditioning,encoder", [("attention", "bilstm"), ("mean", "bilstm"),
                                                  ("attention", "embedding"),
                                                  ("attention", "bilstm_keys")])
def test_pixel_logits_are_causal_and_follow_the_caption(conditioning, encoder):
  config = config_lib.get_preset("tiny").replace(conditioning=conditioning, encoder=encoder)
  model = model_lib.build(config, vocab_size=20)
  rng = np.random.default_rng(0)
  ids, lens = _captions(20, 2, config.max_caption_len, rng)
  images = rng.integers(0, 256, size=(2, 8, 8)).astype(np.uint8)
  logits = lambda c, im: model(dict(caption_ids=c, caption_len=lens, image=im)).numpy()
  base = logits(ids, images)
  for i in (0, 17, 40, 63):
    changed = images.reshape(2, -1).copy()
    changed[:, i:] = 255 - changed[:, i:]  # change pixel i and everything after it
    after = logits(ids, changed.reshape(2, 8, 8))
    np.testing.assert_allclose(after[:, :i + 1], base[:, :i + 1], atol=1e-5,
                               err_msg=f"logits up to pixel {i} saw pixels >= {i}")
    if i + 1 < 64:
      assert np.abs(after[:, i + 1:] - base[:, i + 1:]).max() > 1e-4
  other_ids = ids.copy()
  other_ids[:, 0] = np.where(ids[:, 0] == 5, 6, 5)  # a different first word
  assert np.abs(logits(other_ids, images) - base).max() > 1e-4


@pytest.mark.parametrize("conditioning,encoder", [("attention", "bilstm"), ("mean", "bilstm"),
                                                  ("none", "bilstm"), ("attention", "embedding"),
                                                  ("attention", "bilstm_keys")])
def test_fast_teacher_forcing_equals_the_samplers_cell_step_by_step(conditioning, encoder):
  """The hoisted input projection and the deferred W_rec gradient compute the same logits and
  the same gradients for every weight as plain autodiff through the samplers' cell."""
  config = config_lib.get_preset("tiny").replace(conditioning=conditioning, encoder=encoder)
  model = model_lib.build(config, vocab_size=20)
  rng = np.random.default_rng(1)
  ids, lens = _captions(20, 3, config.max_caption_len, rng)
  images = tf.constant(rng.integers(0, 256, size=(3, 8, 8)).astype(np.uint8))

  @tf.function
  def logits_and_grads(fast):
    with tf.GradientTape() as tape:
      annotations = model.encode(ids, lens)
      logits = (model.logits_from_annotations if fast else model.logits_stepwise)(
          annotations, lens, images)
      loss = model_lib.sequence_loss(logits, images, config.num_pixels)
    return logits, tape.gradient(loss, model.trainable_variables)

  fast_logits, fast_grads = logits_and_grads(True)
  slow_logits, slow_grads = logits_and_grads(False)
  np.testing.assert_allclose(fast_logits.numpy(), slow_logits.numpy(), atol=1e-6)
  for variable, fast, slow in zip(model.trainable_variables, fast_grads, slow_grads):
    assert fast is not None and slow is not None, variable.name
    slow = tf.convert_to_tensor(slow).numpy()
    assert np.abs(slow).max() > 0, variable.name
    np.testing.assert_allclose(tf.convert_to_tensor(fast).numpy(), slow, atol=1e-6,
                               err_msg=variable.name)


@pytest.mark.parametrize("conditioning,encoder,wider", [
    ("attention", "bilstm", dict(decoder_units=48, attention_units=24, encoder_units=24)),
    ("attention", "bilstm_keys", dict(attention_units=20, encoder_units=20)),
    ("attention", "embedding", dict(decoder_units=40, encoder_units=4)),  # no BiLSTM
    ("mean", "bilstm", dict(decoder_units=40, encoder_units=24, attention_units=4)),
    ("mean", "embedding", dict(decoder_units=40, encoder_units=4)),  # no BiLSTM to widen
    ("none", "bilstm", dict(decoder_units=48))])
def test_a_widened_model_computes_the_narrow_models_likelihoods(conditioning, encoder, wider):
  """text2pixel/widening.py: a narrow model's (perturbed, so no weight is at its initial value)
  weights in a wider one give the same log-likelihoods by the fused op, the graph loop and the
  samplers' cell."""
  from text2pixel import widening
  narrow_config = config_lib.get_preset("tiny").replace(conditioning=conditioning,
                                                        encoder=encoder)
  narrow = model_lib.build(narrow_config, vocab_size=20)
  rng = np.random.default_rng(2)
  for weight in narrow.weights:
    weight.assign(weight + 0.3 * rng.standard_normal(weight.shape).astype(np.float32))
  wide = model_lib.build(narrow_config.replace(**wider), vocab_size=20)
  widening.widen_into(narrow, wide)
  ids, lens = _captions(20, 3, narrow_config.max_caption_len, rng)
  images = tf.constant(rng.integers(0, 256, size=(3, 8, 8)).astype(np.uint8))
  expected = narrow.log_likelihood(ids, lens, images, loop="graph").numpy()
  for loop in ("fused", "graph"):
    np.testing.assert_allclose(wide.log_likelihood(ids, lens, images, loop=loop).numpy(),
                               expected, rtol=1e-5, err_msg=loop)
  if wider.get("encoder_units", 0) > narrow_config.encoder_units:  # the new BiLSTM units live
    features = wide.encode(ids, lens).numpy()[..., -wide.config.encoder_units:]
    assert np.abs(features[..., narrow_config.encoder_units:]).max() > 1e-3
  stepwise = wide.pixel_log_probs(
      wide.logits_stepwise(wide.encode(ids, lens), lens, images), images)
  np.testing.assert_allclose(tf.reduce_sum(stepwise, -1).numpy(), expected, rtol=1e-5)
  with pytest.raises(config_lib.ConfigError, match="decoder_units 16 is narrower"):
    widening.widening(narrow_config, narrow_config.replace(decoder_units=16))


def test_step_counter_counts_past_256_under_bfloat16():
  """The cell's step index (it picks the row/column embeddings) stays exact over a 32x32 raster
  when the compute dtype is bfloat16, which counts exactly only to 256."""
  tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    cell = model_lib.PixelLSTMCell(8, 32, 4, position_embedding_dim=2, above_context=3)
    inputs = tf.zeros([2, 1024, 5], tf.bfloat16)  # embedding (4) and pixel id, one step each
    state = cell.get_initial_state(batch_size=2, dtype=tf.bfloat16)
    final = tf.keras.layers.RNN(cell, return_state=True)(inputs, initial_state=state)
  finally:
    tf.keras.mixed_precision.set_global_policy("float32")
  step = final[3]
  assert step.dtype == tf.float32
  np.testing.assert_array_equal(step.numpy(), 1024.0)


@pytest.mark.parametrize("encoder", ["bilstm", "embedding", "bilstm_keys"])
def test_padding_is_never_attended(encoder):
  config = config_lib.get_preset("tiny").replace(encoder=encoder)
  model = model_lib.build(config, vocab_size=20)
  ids = np.array([[5, 6, 2] + [0] * 13], np.int32)
  images = np.zeros((1, 8, 8), np.uint8)
  base = model(dict(caption_ids=ids, caption_len=np.array([3]), image=images)).numpy()
  junk = ids.copy()
  junk[0, 3:] = 9  # words past caption_len must not matter
  after = model(dict(caption_ids=junk, caption_len=np.array([3]), image=images)).numpy()
  np.testing.assert_allclose(after, base, atol=1e-5)


def test_the_embedding_encoder_is_each_words_embedding_plus_its_positions():
  config = config_lib.get_preset("tiny").replace(encoder="embedding")
  model = model_lib.build(config, vocab_size=20)
  ids = np.array([[5, 6, 2] + [0] * 13, [7, 2] + [0] * 14], np.int32)
  annotations = model.encode(tf.constant(ids), tf.constant([3, 2])).numpy()
  words = model.word_embedding.embeddings.numpy()
  positions = model.word_position_embedding.embeddings.numpy()
  assert annotations.shape == (2, 16, model.annotation_dim) == (2, 16, config.word_embedding_dim)
  np.testing.assert_allclose(annotations, words[ids] + positions[None], rtol=1e-6)
  assert not hasattr(model, "encoder")  # no LSTM: no word's vector summarises the caption


def test_bilstm_keys_score_by_the_bilstm_and_bring_the_words():
  """encoder="bilstm_keys": the attention's keys are W_a applied to the BiLSTM states, its
  values each word's embedding plus its position's (padding zeroed), so the context c_j is a
  mix of words, never of caption summaries."""
  config = config_lib.get_preset("tiny").replace(encoder="bilstm_keys")
  model = model_lib.build(config, vocab_size=20)
  ids = np.array([[5, 6, 2] + [0] * 13, [7, 2] + [0] * 14], np.int32)
  lengths = tf.constant([3, 2])
  annotations = model.encode(tf.constant(ids), lengths)
  width = config.word_embedding_dim
  assert model.annotation_dim == width and annotations.shape == (2, 16, width +
                                                                  2 * config.encoder_units)
  words = model.word_embedding.embeddings.numpy()[ids] + \
      model.word_position_embedding.embeddings.numpy()[None]
  states = model.encoder(model.word_embedding(ids), mask=tf.sequence_mask(lengths, 16)).numpy()
  np.testing.assert_allclose(annotations[..., :width], words, rtol=1e-6)
  np.testing.assert_allclose(annotations[..., width:], states, rtol=1e-6)
  model.conditioning.set_memory(annotations, lengths)
  mechanism = model.attention_mechanism
  real = np.arange(16)[None] < np.array([3, 2])[:, None]
  np.testing.assert_allclose(mechanism.values.numpy(), words * real[..., None], rtol=1e-6)
  np.testing.assert_allclose(mechanism.keys.numpy(),
                             (states * real[..., None]) @ mechanism.memory_layer.kernel.numpy(),
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(config_lib.ConfigError, match="bilstm_keys"):
    config.replace(conditioning="mean")
  # Every sampler splits the memory alike: the log-probability each reports for its images is
  # the teacher-forced one (the fused decoder for greedy and ancestral, tfa's for beam search).
  from text2pixel import sampling
  for method in sampling.METHODS:
    out = sampling.make_generate_fn(model, method, num_samples=2, beam_width=2)(
        tf.constant(ids), lengths, tf.constant(1.0), tf.constant(3))
    images = out["images"].numpy().reshape(-1, 8, 8)
    scored = model.log_likelihood(tf.repeat(ids, 2, 0), tf.repeat(lengths, 2, 0),
                                  tf.constant(images)).numpy()
    np.testing.assert_allclose(out["log_prob"].numpy().ravel(), scored, rtol=1e-4, atol=1e-2,
                               err_msg=method)


@pytest.mark.parametrize("encoder", ["bilstm", "bilstm_keys"])
def test_alignments_recomputed_from_the_loops_queries_are_its_attention(encoder):
  """model.logits_and_alignments: its alpha (eqs. 8-9 from the queries h^pix_j the fast loop ran
  with) is the fused decoder's alpha, its logits the loop's, and a loss on log alpha has the
  same gradient for every weight through the fused op (its h gradient) as through the graph
  loop's autodiff; padding gets no attention."""
  rng = np.random.default_rng(3)
  config = config_lib.get_preset("tiny").replace(encoder=encoder)
  ids, lens = _captions(20, 3, config.max_caption_len, rng)
  images = tf.constant(rng.integers(0, 256, size=(3, 8, 8)).astype(np.uint8))
  inputs = dict(caption_ids=tf.constant(ids), caption_len=tf.constant(lens), image=images)
  weights = tf.constant(rng.uniform(size=(3, 64, config.max_caption_len)), tf.float32)
  results = {}
  for loop in ("fused", "graph"):
    model = model_lib.build(config.replace(pixel_loop=loop), vocab_size=20)
    if loop == "graph":
      for target, source in zip(model.weights, results["fused"]["model"].weights):
        target.assign(source)
    with tf.GradientTape() as tape:
      logits, log_alpha = model.logits_and_alignments(inputs)
      loss = -tf.reduce_sum(weights * log_alpha)
    results[loop] = dict(model=model, logits=logits.numpy(), alpha=np.exp(log_alpha.numpy()),
                         grads=tape.gradient(loss, model.trainable_variables))
  fused, graph = results["fused"], results["graph"]
  pixels = tf.reshape(tf.cast(images, tf.int32), [3, 64])
  decoder_alpha = fused["model"].decode_fused(fused["model"].encode(ids, lens), lens, "score",
                                              targets=pixels)[2].numpy()
  np.testing.assert_allclose(fused["alpha"], decoder_alpha, atol=1e-5)
  np.testing.assert_allclose(graph["alpha"], decoder_alpha, atol=1e-5)
  np.testing.assert_allclose(graph["logits"], fused["logits"], atol=1e-5)
  padding = np.arange(config.max_caption_len)[None, None, :] >= lens[:, None, None]
  assert fused["alpha"][np.broadcast_to(padding, fused["alpha"].shape)].max() == 0
  np.testing.assert_allclose(fused["alpha"].sum(-1), 1, rtol=1e-5)
  moved = 0
  for variable, a, b in zip(fused["model"].trainable_variables, fused["grads"], graph["grads"]):
    if b is None:  # what the attention does not depend on (the output layer)
      assert a is None or np.abs(tf.convert_to_tensor(a).numpy()).max() == 0, variable.name
      continue
    a, b = tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy()
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4, err_msg=variable.name)
    moved += np.abs(b).max() > 0
  assert moved >= 5  # the pixel LSTM's weights, W_a, the encoder: the loss reaches them
  # Under mixed precision its logits are call's: the weights are read in the compute dtype.
  with training.precision_policy("mixed_bfloat16"):
    model = model_lib.build(config, vocab_size=20)
    logits, _ = model.logits_and_alignments(inputs)
    np.testing.assert_array_equal(logits.numpy(), model(inputs, training=True).numpy())


def _trainer(run_dir, data_dir, **changes):
  config = config_lib.get_preset("tiny").replace(**changes)
  return training.Trainer(config, data_dir, run_dir, log=lambda *_: None)


@pytest.mark.parametrize("optimizer,encoder", [("rmsprop", "bilstm"), ("adam", "bilstm"),
                                               ("rmsprop", "embedding")])
def test_tiny_training_loss_falls(optimizer, encoder, mnist_captions_dir, tmp_path):
  trainer = _trainer(str(tmp_path / "run"), mnist_captions_dir, train_steps=40,
                     eval_every=1000, sample_every=1000, optimizer=optimizer, encoder=encoder)
  assert type(trainer.optimizer).__name__.lower() == optimizer
  before = trainer.evaluate(4)["bits_per_dim"]
  losses = []
  for _ in range(40):
    loss, _, applied = trainer.train_step(trainer.train_iterator)
    assert bool(applied)
    losses.append(float(loss))
  after = trainer.evaluate(4)
  assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses
  assert after["bits_per_dim"] < 0.6 * before, (before, after)
  assert after["bits_per_dim"] < 3.5  # far below the 8 bits/dim of a uniform guess
  # (The caption gain is checked against its own computation in test_training.py.)


def test_caption_dropout_empties_a_keyed_share_of_the_captions():
  ids = tf.constant(np.arange(1, 2001, dtype=np.int32).reshape(1000, 2) % 50 + 3)
  batch = {"caption_ids": tf.pad(ids, [[0, 0], [0, 3]]), "caption_len": tf.fill([1000], 2),
           "image": tf.zeros([1000, 2, 2], tf.uint8)}
  out = training.drop_captions(batch, 0.3, seed=7, step=tf.constant(5, tf.int64))
  dropped = out["caption_len"].numpy() == 1
  assert 0.25 < dropped.mean() < 0.35
  np.testing.assert_array_equal(out["caption_ids"].numpy()[dropped],
                                [[text_lib.EOS_ID, 0, 0, 0, 0]] * dropped.sum())
  np.testing.assert_array_equal(out["caption_ids"].numpy()[~dropped],
                                batch["caption_ids"].numpy()[~dropped])
  assert out["image"] is batch["image"]
  again = training.drop_captions(batch, 0.3, seed=7, step=5)["caption_len"].numpy() == 1
  np.testing.assert_array_equal(again, dropped)  # keyed: a resumed run drops the same
  assert not np.array_equal(
      training.drop_captions(batch, 0.3, seed=7, step=6)["caption_len"].numpy() == 1, dropped)
  # Replica r of two, each with half the global batch, drops the one-device draw's r-th half.
  halves = [training.drop_captions({k: v[500 * r:500 * (r + 1)] for k, v in batch.items()},
                                   0.3, seed=7, step=5, replica=r, global_batch=1000)
            for r in range(2)]
  np.testing.assert_array_equal(
      np.concatenate([h["caption_len"].numpy() == 1 for h in halves]), dropped)


def test_swap_two_words_exchanges_two_different_named_words_only():
  # word ids 5..7 stand for digit words; 3 and 4 for others; 2 is <eos>, 0 padding.
  ids = tf.constant([[3, 5, 4, 6, 2, 0],    # two different -> swapped
                     [3, 6, 4, 6, 2, 0],    # the same word twice -> unchanged
                     [3, 7, 4, 2, 0, 0],    # one -> unchanged
                     [5, 6, 7, 2, 0, 0],    # three -> unchanged
                     [2, 0, 0, 0, 0, 0],    # the empty caption
                     [7, 3, 3, 3, 5, 2],    # at the ends
                     [3, 7, 4, 6, 2, 0]])   # a forbidden pair (given as 6, 7) -> unchanged
  swapped, eligible = text_lib.swap_two_words(ids, [5, 6, 7], forbidden_pairs=[(6, 7)])
  np.testing.assert_array_equal(eligible.numpy(), [True, False, False, False, False, True, False])
  np.testing.assert_array_equal(swapped.numpy(), [[3, 6, 4, 5, 2, 0], [3, 6, 4, 6, 2, 0],
                                                  [3, 7, 4, 2, 0, 0], [5, 6, 7, 2, 0, 0],
                                                  [2, 0, 0, 0, 0, 0], [5, 3, 3, 3, 7, 2],
                                                  [3, 7, 4, 6, 2, 0]])


def test_neighbour_of_two_words_draws_each_way_a_pair_can_fail():
  # word ids 10..19 stand for the digit words 0..9; (10, 15) is a forbidden (held-out) pair.
  ids = np.array([[3, 13, 4, 14, 2, 0],    # "3 ... 4": swap, repeat, replace
                  [3, 13, 4, 13, 2, 0],    # "3 ... 3": only a replacement differs
                  [3, 17, 4, 2, 0, 0],     # one digit word: never eligible
                  [3, 11, 4, 15, 2, 0],    # "1 ... 5": may not become "0 ... 5"
                  [3, 10, 4, 15, 2, 0]],   # names the forbidden pair itself
                 np.int32)
  draws = tf.random.stateless_uniform([400, 5, 3], seed=[1, 2])
  negatives, eligible = [], []
  for d in tf.unstack(draws):
    n, e = text_lib.neighbour_of_two_words(tf.constant(ids), list(range(10, 20)), d,
                                           forbidden_pairs=[(15, 10)])
    negatives.append(n.numpy())
    eligible.append(e.numpy())
  negatives, eligible = np.stack(negatives), np.stack(eligible)
  np.testing.assert_array_equal(negatives[~eligible], np.broadcast_to(ids, negatives.shape)[
      ~eligible])
  assert not eligible[:, [2, 4]].any() and eligible[:, 0].all()
  # Only the digit words change, and an eligible negative differs from its caption.
  for row in (0, 1, 3):
    n = negatives[eligible[:, row], row]
    np.testing.assert_array_equal(n[:, [0, 2, 4, 5]], np.broadcast_to(ids[row, [0, 2, 4, 5]],
                                                                      (len(n), 4)))
    assert (n[:, [1, 3]] != ids[row, [1, 3]]).any(axis=1).all()
  pairs = lambda row: {tuple(p) for p in negatives[eligible[:, row], row][:, [1, 3]]}
  # "3 4": the swap, both repeats, and a replacement of either word by every other digit.
  assert {(14, 13), (13, 13), (14, 14)} <= pairs(0)
  assert {(d, 14) for d in range(10, 20) if d != 13} <= pairs(0)
  assert {(13, d) for d in range(10, 20) if d != 14} <= pairs(0)
  assert pairs(0) <= {(14, 13), (13, 13), (14, 14)} | {(d, 14) for d in range(10, 20)} | {
      (13, d) for d in range(10, 20)}
  assert pairs(1) == {(d, 13) for d in range(10, 20) if d != 13} | {
      (13, d) for d in range(10, 20) if d != 13}
  assert (10, 15) not in pairs(3) and (15, 10) not in pairs(3) and (11, 10) in pairs(3)
  # Each of the four ways about equally often for "3 4" (swap, repeats, replacements 1/4).
  kinds = np.array([{(14, 13): 0, (13, 13): 1, (14, 14): 2}.get(tuple(p), 3)
                    for p in negatives[:, 0][:, [1, 3]]])
  assert all(60 < (kinds == k).sum() < 140 for k in range(4)), np.bincount(kinds)


def test_resumed_run_equals_uninterrupted_run(mnist_captions_dir, tmp_path):
  # (With captions dropped: the draw is keyed by the step, so a resumed run drops the same.)
  common = dict(checkpoint_every=10, eval_every=1000, sample_every=1000, log_every=1000,
                caption_dropout=0.3)
  straight = _trainer(str(tmp_path / "straight"), mnist_captions_dir, train_steps=20, **common)
  straight.train()
  first = _trainer(str(tmp_path / "resumed"), mnist_captions_dir, train_steps=10, **common)
  first.train()
  second = _trainer(str(tmp_path / "resumed"), mnist_captions_dir, train_steps=20, **common)
  assert second.restore() == 10
  slots_saved = [v.numpy().copy() for v in second.optimizer.variables]
  reader = tf.train.load_checkpoint(str(tmp_path / "resumed" / "checkpoints"))
  saved_names = [n for n in reader.get_variable_to_shape_map() if "optimizer/_variables" in n]
  assert len(saved_names) >= len(second.model.trainable_variables)  # the RMS slots are saved
  assert any(np.abs(s).sum() > 0 for s in slots_saved[1:])
  second.train()
  assert int(second.step.numpy()) == 20
  for a, b in zip(straight.model.weights, second.model.weights):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.name)
  for a, b in zip(straight.optimizer.variables, second.optimizer.variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_run_trains_and_writes_samples(precision, mnist_captions_dir, tmp_path):
  """The train binary under mixed precision (float16 with its loss scale): finite validation
  bits/dim, and the sample grid (the tfa decoders see float32 logits from a half-precision
  cell) is written."""
  run_dir = str(tmp_path / precision)
  result = subprocess.run(
      [sys.executable, "-m", "text2pixel.binaries.train", "--preset", "tiny", "--data_dir",
       mnist_captions_dir, "--run_dir", run_dir, "--mixed_precision", precision,
       "--train_steps", "6", "--log_every", "3", "--sample_every", "6", "--eval_every", "6"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  with open(os.path.join(run_dir, "train_result.json")) as f:
    assert np.isfinite(json.load(f)["validation_bits_per_dim"])
  assert os.path.exists(os.path.join(run_dir, "samples", "step0000006.png"))


def _model_weights(checkpoint_path):
  """The model's weights as a checkpoint on disk holds them: {name: array}."""
  reader = tf.train.load_checkpoint(checkpoint_path)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if name.startswith("model/") and "OPTIMIZER_SLOT" not in name}


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(mnist_captions_dir, tmp_path):
  """A train binary killed (SIGKILL) at a random moment between checkpoints leaves a checkpoint
  that a restart resumes from and trains on. (That a resumed run ends where an uninterrupted one
  ends, weights and optimizer state alike, is test_resumed_run_equals_uninterrupted_run.)"""
  run_dir = str(tmp_path / "killed")
  cmd = [sys.executable, "-m", "text2pixel.binaries.train", "--preset", "tiny", "--data_dir",
         mnist_captions_dir, "--run_dir", run_dir, "--checkpoint_every", "5", "--eval_every",
         "100000", "--sample_every", "100000", "--log_every", "5"]
  proc = subprocess.Popen(cmd + ["--train_steps", "100000"], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  index = os.path.join(run_dir, "checkpoints", "checkpoint")
  deadline = time.time() + 120
  while time.time() < deadline and not (os.path.exists(index) and
                                         "ckpt-15" in open(index).read()):
    time.sleep(0.2)
  time.sleep(np.random.default_rng().uniform(0, 0.5))  # a random moment between checkpoints
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=30)
  latest = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
  saved_step = layout.checkpoint_step(latest)
  assert saved_step >= 15
  saved_weights = _model_weights(latest)
  reader = tf.train.load_checkpoint(latest)
  assert any("optimizer/_variables/1/" in n for n in reader.get_variable_to_shape_map())

  resumed = subprocess.run(cmd + ["--train_steps", str(saved_step + 5)], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  match = re.search(r"resumed from .*ckpt-(\d+) at step (\d+)", resumed.stdout)
  assert match and int(match.group(2)) == saved_step, resumed.stdout
  final = re.search(rf"step {saved_step + 5}/{saved_step + 5} loss ([0-9.]+) nats/px",
                    resumed.stdout)
  assert final and 0 < float(final.group(1)) < math.log(256), resumed.stdout
  trained = _model_weights(os.path.join(run_dir, "checkpoints"))
  assert trained.keys() == saved_weights.keys() and len(trained) > 5
  assert any(not np.array_equal(trained[n], saved_weights[n]) for n in trained)


def test_nonfinite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    mnist_captions_dir, tmp_path):
  common = dict(checkpoint_every=5, eval_every=1000, sample_every=1000, log_every=1000)
  trainer = _trainer(str(tmp_path / "nan"), mnist_captions_dir, train_steps=5, **common)
  trainer.train()
  good = [w.numpy().copy() for w in trainer.model.weights]
  trainer = _trainer(str(tmp_path / "nan"), mnist_captions_dir, train_steps=10, **common)
  restore = trainer.restore

  def restore_then_blow_up():  # a blown-up weight after the restore: every loss is NaN
    step = restore()
    kernel = trainer.model.output_layer.kernel
    kernel.assign(tf.fill(kernel.shape, float("nan")))
    return step
  trainer.restore = restore_then_blow_up
  with pytest.raises(training.TrainingError, match=r"non-finite loss .* at step 6; the last good "
                                                   r"checkpoint is kept"):
    trainer.train()
  assert tf.train.latest_checkpoint(str(tmp_path / "nan" / "checkpoints")).endswith("ckpt-5")
  restored = _trainer(str(tmp_path / "nan"), mnist_captions_dir, train_steps=10, **common)
  assert restored.restore() == 5
  for a, b in zip(good, restored.model.weights):
    np.testing.assert_array_equal(a, b.numpy())


def test_nonfinite_batches_can_be_skipped_and_counted(mnist_captions_dir, tmp_path):
  """Through the real step: the word embedding of one digit is NaN, so exactly the batches whose
  captions name that digit have a non-finite loss. They are skipped and counted; the others
  train, and the run ends at train_steps with a checkpoint at each checkpoint_every."""
  from text2pixel import tfrecords
  config = config_lib.get_preset("tiny").replace(
      train_steps=12, nonfinite="skip", checkpoint_every=4, keep_checkpoints=5, eval_every=1000,
      sample_every=1000, log_every=1000)
  trainer = training.Trainer(config, mnist_captions_dir, str(tmp_path / "skip"),
                             log=lambda *_: None)
  # The same 12 batches, read independently: which of them name a digit.
  stream = tfrecords.make_dataset(trainer.train_files, config.batch_size, config.image_side,
                                  config.max_caption_len, shuffle=True, repeat=True,
                                  seed=config.seed, shuffle_buffer=config.shuffle_buffer)
  batches = [batch["caption_ids"].numpy() for batch in stream.take(12)]
  # A digit named by some of them but not by the captions of the final sample grid (a NaN
  # caption cannot be sampled from, and the grid is drawn after the last step).
  sampled = np.concatenate(tfrecords.load_split(mnist_captions_dir, "validation",
                                                limit=config.num_sample_captions)["caption_ids"])
  digits = [trainer.vocab.encode(str(d), config.max_caption_len)[0] for d in range(10)]
  poisoned = next(w for w in digits if w not in sampled and
                  0 < sum(bool(np.any(b == w)) for b in batches) < 12)
  naming = [bool(np.any(b == poisoned)) for b in batches]
  restore = trainer.restore

  def restore_then_poison():
    step = restore()
    table = trainer.model.word_embedding.embeddings
    table[poisoned].assign(tf.fill(table.shape[1:], float("nan")))
    return step
  trainer.restore = restore_then_poison
  weights = trainer.model.trainable_weights
  table_index = [i for i, w in enumerate(weights) if w is trainer.model.word_embedding.embeddings]
  before = [w.numpy().copy() for w in weights]
  trainer.train()
  assert int(trainer.nonfinite_skipped.numpy()) == sum(naming)
  assert int(trainer.step.numpy()) == 12
  checkpoints = tf.train.get_checkpoint_state(str(tmp_path / "skip" / "checkpoints"))
  assert [layout.checkpoint_step(p) for p in checkpoints.all_model_checkpoint_paths] == [4, 8, 12]
  after = [w.numpy() for w in weights]
  for i in table_index:  # the poisoned row stays NaN (no update reaches it); set it aside
    assert np.isnan(after[i][poisoned]).all()
    before[i], after[i] = (np.delete(x, poisoned, axis=0) for x in (before[i], after[i]))
  for w, old, new in zip(weights, before, after):  # the applied steps trained every weight
    assert np.isfinite(new).all() and not np.array_equal(old, new), w.name
