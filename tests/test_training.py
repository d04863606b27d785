"""The Trainer's promises, each through real training on real TFRecords: --nonfinite=skip keeps
the time bound and the checkpoints and gives up on a run that does not recover; a restart asks
for the same run; over-long captions are counted; the precision policy does not leak; the caption
gain is what it says; every validation reports the digit judge; the time bound spans restarts; two replicas train like one device."""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from text2pixel import config as config_lib, layout, model as model_lib, text as text_lib
from text2pixel import tfrecords, training
from text2pixel.errors import DataError, TrainingError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = dict(eval_every=100_000, sample_every=100_000, log_every=100_000)


def _tiny(**changes):
  return config_lib.get_preset("tiny").replace(**changes)


def _poisoned_trainer(run_dir, data_dir, config, log=lambda *_: None):
  """A Trainer whose output layer turns NaN right after its restore: every step's loss is NaN,
  through the real train step and its guard."""
  trainer = training.Trainer(config, data_dir, run_dir, log=log)
  restore = trainer.restore

  def restore_then_poison():
    step = restore()
    kernel = trainer.model.output_layer.kernel
    kernel.assign(tf.fill(kernel.shape, float("nan")))
    return step
  trainer.restore = restore_then_poison
  return trainer


def _checkpoint_steps(run_dir):
  state = tf.train.get_checkpoint_state(os.path.join(run_dir, "checkpoints"))
  return [layout.checkpoint_step(p) for p in state.all_model_checkpoint_paths] if state else []


# --- --nonfinite=skip ---------------------------------------------------------------------------

def test_skipped_steps_count_towards_the_time_bound(mnist_captions_dir, tmp_path):
  """The first batch's loss is non-finite (a digit word it names has a NaN embedding); a time
  bound any step exceeds (1e-9 minutes) ends the run right after it, with the final checkpoint
  written, instead of skipping on until train_steps."""
  run_dir = str(tmp_path / "bounded")
  config = _tiny(nonfinite="skip", train_steps=200, max_train_minutes=1e-9,
                 max_consecutive_nonfinite=100, **QUIET)
  trainer = training.Trainer(config, mnist_captions_dir, run_dir, log=lambda *_: None)
  first_batch = next(iter(tfrecords.make_dataset(
      trainer.train_files, config.batch_size, config.image_side, config.max_caption_len,
      shuffle=True, repeat=True, seed=config.seed, shuffle_buffer=config.shuffle_buffer)))
  # A word of the first batch that the final sample grid's captions do not name (a NaN caption
  # cannot be sampled from, and the grid is drawn after the last step).
  sampled = tfrecords.load_split(mnist_captions_dir, "validation",
                                 limit=config.num_sample_captions)["caption_ids"]
  digits = [trainer.vocab.encode(str(d), config.max_caption_len)[0] for d in range(10)]
  word = next(w for w in digits if w in first_batch["caption_ids"].numpy()
              and w not in np.concatenate(sampled))
  restore = trainer.restore

  def restore_then_poison():
    step = restore()
    trainer.model.word_embedding.embeddings[word].assign(tf.fill([config.word_embedding_dim],
                                                                 float("nan")))
    return step
  trainer.restore = restore_then_poison
  trainer.train()
  assert int(trainer.step.numpy()) == 1
  assert int(trainer.nonfinite_skipped.numpy()) == 1
  assert _checkpoint_steps(run_dir) == [1]


def test_consecutive_nonfinite_steps_stop_the_run_after_checkpointing_on_cadence(
    mnist_captions_dir, tmp_path):
  run_dir = str(tmp_path / "hopeless")
  messages = []
  trainer = _poisoned_trainer(run_dir, mnist_captions_dir, _tiny(
      nonfinite="skip", train_steps=200, max_consecutive_nonfinite=5, checkpoint_every=2,
      keep_checkpoints=10, **QUIET), log=messages.append)
  with pytest.raises(TrainingError, match=r"5 consecutive steps had a non-finite loss or gradient "
                                          r"\(steps 1-5, max_consecutive_nonfinite=5\)"):
    trainer.train()
  assert int(trainer.step.numpy()) == 5
  assert _checkpoint_steps(run_dir) == [2, 4]  # the cadence held while skipping
  assert sum("batch skipped (" in m for m in messages) == 5


# --- restarts -----------------------------------------------------------------------------------

def test_a_restart_must_ask_for_the_same_run(tiny_run_dir):
  """The whole resolved config and the preset name are compared with the saved ones; only how
  long and how often may change, and only when given as flags."""
  saved = config_lib.load(os.path.join(tiny_run_dir, "config.json"))
  assert layout.read_run_info(tiny_run_dir) == {"preset": "tiny", "init_from": None}
  tiny = config_lib.get_preset("tiny")
  # The same flags: the saved run, with its own bookkeeping (eval_every=1000), not the preset's.
  assert layout.resolve_run_config(tiny_run_dir, tiny, {}, "tiny") == saved
  longer = layout.resolve_run_config(tiny_run_dir, tiny.replace(train_steps=99),
                                     {"train_steps": 99}, "tiny")
  assert longer == saved.replace(train_steps=99)
  with pytest.raises(TrainingError, match=r"\(preset: run has 'tiny', this command 'cpu_small'; "
                                          r"image_side: run has 8, this command 32; "):
    layout.resolve_run_config(tiny_run_dir, config_lib.get_preset("cpu_small"), {},
                              "cpu_small")
  # A field the preset sets differently is a different run even if no flag names it.
  with pytest.raises(TrainingError, match=r"\(learning_rate: run has 0.003, this command 0.001\)"):
    layout.resolve_run_config(tiny_run_dir, tiny.replace(learning_rate=1e-3), {}, "tiny")
  with pytest.raises(TrainingError, match=r"decoder_units: run has 32, this command 64"):
    layout.resolve_run_config(tiny_run_dir, tiny.replace(decoder_units=64),
                              {"decoder_units": 64}, "tiny")


def test_the_latest_checkpoint_is_found_without_tensorflow(tiny_run_dir, tmp_path):
  """Binaries check a run before TensorFlow starts: layout.latest_checkpoint must agree with
  tf.train.latest_checkpoint, on a real run, a moved one, and where there is none."""
  checkpoints = os.path.join(tiny_run_dir, "checkpoints")
  assert layout.latest_checkpoint(checkpoints) == tf.train.latest_checkpoint(checkpoints)
  assert layout.latest_checkpoint(checkpoints).endswith("ckpt-60")
  moved = tmp_path / "moved"
  shutil.copytree(checkpoints, moved)
  assert layout.latest_checkpoint(str(moved)) == tf.train.latest_checkpoint(str(moved))
  for path in moved.glob("ckpt-60.index"):  # the file it names is gone: no checkpoint
    path.unlink()
  assert layout.latest_checkpoint(str(moved)) is tf.train.latest_checkpoint(str(moved)) is None
  assert layout.latest_checkpoint(str(tmp_path / "nowhere")) is None
  # A run directory whose name is not ASCII: the checkpoint file escapes its bytes.
  elsewhere = tmp_path / "café run"
  shutil.copytree(checkpoints, elsewhere)
  state = tf.train.get_checkpoint_state(str(elsewhere))
  tf.compat.v1.train.update_checkpoint_state(  # an absolute path, as TF 1 wrote them
      str(elsewhere), os.path.join(str(elsewhere), "ckpt-40"),
      list(state.all_model_checkpoint_paths))
  assert layout.latest_checkpoint(str(elsewhere)) == tf.train.latest_checkpoint(str(elsewhere))
  assert layout.latest_checkpoint(str(elsewhere)).endswith("café run/ckpt-40")


def test_the_time_bound_carries_over_a_restart(mnist_captions_dir, tmp_path):
  run_dir = str(tmp_path / "run")
  lines = []
  first = training.Trainer(_tiny(train_steps=3, **QUIET), mnist_captions_dir, run_dir,
                           log=lines.append)
  first.train()
  # (and its validation says once why the digit judge cannot score an 8x8 run)
  assert [l for l in lines if l.startswith("digit judge")] == [
      "digit judge: off: the judge reads 32x32 images, this run draws 8"]
  spent = float(first.train_seconds.numpy())
  assert spent > 0
  # A bound below what the run has already used: nothing more is trained.
  messages = []
  second = training.Trainer(_tiny(train_steps=50, max_train_minutes=spent / 60 / 2, **QUIET),
                            mnist_captions_dir, run_dir, log=messages.append)
  result = second.train()
  assert result["step"] == 3 and int(second.step.numpy()) == 3
  assert any("nothing to do" in m for m in messages)
  # A bound a hair above it: exactly one more step, and the time adds up across the starts.
  third = training.Trainer(_tiny(train_steps=50, max_train_minutes=spent / 60 + 1e-9, **QUIET),
                           mnist_captions_dir, run_dir, log=lambda *_: None)
  result = third.train()
  assert int(third.step.numpy()) == 4
  assert float(third.train_seconds.numpy()) > spent
  assert result["minutes"] == pytest.approx(float(third.train_seconds.numpy()) / 60)


# --- captions longer than max_caption_len -------------------------------------------------------

def _lengthen_captions(source_dir, out_dir, count):
  """A copy of a data set whose first ``count`` train captions get 20 more tokens."""
  shutil.copytree(source_dir, out_dir)
  for path in layout.split_files(out_dir, "train"):
    records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    with tf.io.TFRecordWriter(path) as writer:
      for record in records:
        example = tf.train.Example.FromString(record)
        if count > 0:
          ids = example.features.feature["caption_ids"].int64_list.value
          eos = ids[-1]
          del ids[-1]
          ids.extend([3] * 20 + [eos])  # 20 words more before <eos>
          count -= 1
        writer.write(example.SerializeToString())
  return out_dir


def test_over_long_captions_are_counted_reported_and_refused_beyond_one_percent(
    mnist_captions_dir, tmp_path):
  config = _tiny(**QUIET)
  few = _lengthen_captions(mnist_captions_dir, str(tmp_path / "few"), 3)  # 3 of 640: 0.5%
  files = layout.split_files(few, "train")
  lengths = tfrecords.caption_lengths(files)
  independent = [len(ids) for ids in tfrecords.load_split(few, "train")["caption_ids"]]
  assert sorted(lengths.tolist()) == sorted(independent) and len(lengths) == 640
  assert int((lengths > config.max_caption_len).sum()) == 3
  read = tfrecords.make_dataset(files, 1, config.image_side, config.max_caption_len)
  assert sum(1 for _ in read) == 637  # the reader does drop exactly those

  messages = []
  trainer = training.Trainer(config, few, str(tmp_path / "run"), log=messages.append)
  assert trainer.dropped_captions == {"train": 3, "validation": 0}
  assert "3 of 640 train captions (0.47%) are longer than max_caption_len=16 tokens and are " \
         "skipped" in messages

  many = _lengthen_captions(mnist_captions_dir, str(tmp_path / "many"), 7)  # 7 of 640: 1.1%
  with pytest.raises(DataError, match=r"7 of 640 train captions in .* \(1.1%\) are longer than "
                                      r"max_caption_len=16 tokens \(<eos> included\) and would be "
                                      r"skipped; the limit is 1%: set --max_caption_len 3\d"):
    training.Trainer(config, many, str(tmp_path / "run_many"), log=lambda *_: None)
  assert not os.path.exists(tmp_path / "run_many")


# --- mixed precision ----------------------------------------------------------------------------

def test_the_trainer_does_not_leak_its_precision_policy(mnist_captions_dir, tmp_path):
  assert tf.keras.mixed_precision.global_policy().name == "float32"
  trainer = training.Trainer(_tiny(mixed_precision="mixed_bfloat16", train_steps=2, **QUIET),
                             mnist_captions_dir, str(tmp_path / "bf16"), log=lambda *_: None)
  assert trainer.model.pixel_embedding.compute_dtype == "bfloat16"  # it did train in bfloat16
  assert tf.keras.mixed_precision.global_policy().name == "float32"
  trainer.train()
  assert tf.keras.mixed_precision.global_policy().name == "float32"
  second = model_lib.build(_tiny(), vocab_size=20)
  assert second.pixel_embedding.compute_dtype == "float32"
  assert second.pixel_cell.compute_dtype == "float32"
  assert np.isfinite(trainer.evaluate(1)["bits_per_dim"])  # its own functions still run


# --- the digit judge at every validation --------------------------------------------------------

def test_every_validation_reports_the_judge_accuracy_of_samples(mnist_captions_dir, tmp_path):
  """A 32x32 run reports validation/judge_accuracy[_heldout] at each validation (console,
  TensorBoard, train_result.json)."""
  from experiments.cpu_small_sweep import validation_history
  lines = []
  run_dir = str(tmp_path / "judged")
  config = _tiny(image_side=32, train_steps=2, eval_every=1, sample_every=100, log_every=100,
                 judge_captions=2, judge_samples=2)
  result = training.Trainer(config, mnist_captions_dir, run_dir, log=lines.append).train()
  judged = [l for l in lines if "% of samples right for validation captions" in l]
  assert [l.split(":")[0] for l in judged] == ["step 1", "step 2"], lines  # not twice at the end
  assert "(8 samples," in judged[0]
  history = validation_history(run_dir)
  assert sorted(history) == [1, 2]
  for name in ("judge_accuracy", "judge_accuracy_heldout"):
    assert 0.0 <= result[name] <= 1.0
    assert history[2][name] == pytest.approx(result[name])
  # (An 8x8 run's one line on why it is not judged: test_the_time_bound_carries_over_a_restart.)


# --- the caption gain ---------------------------------------------------------------------------

def _independent_validation_figures(model, config, files, batches, digit_ids):
  """bits/dim, caption gain and order preference from model.log_likelihood on the first
  validation batches, with the captions rolled by one and the digit words swapped in numpy (what
  the trainer's validation claims to compute)."""
  stream = tfrecords.make_dataset(files, config.batch_size, config.image_side,
                                  config.max_caption_len).take(batches)
  true, rolled, swapped = [], [], []
  for batch in stream:
    ids, lengths, images = (batch[k].numpy() for k in ("caption_ids", "caption_len", "image"))
    true.append(model.log_likelihood(ids, lengths, images).numpy())
    rolled.append(model.log_likelihood(np.roll(ids, 1, axis=0), np.roll(lengths, 1),
                                       images).numpy())
    swap = ids.copy()
    for row in swap:  # two different digit words: exchange them; otherwise not a pair (nan)
      where = np.flatnonzero(np.isin(row, digit_ids))
      if len(where) == 2 and row[where[0]] != row[where[1]]:
        row[where] = row[where[::-1]]
      else:
        row[:] = -1
    pair = swap[:, 0] >= 0
    scores = np.full(len(ids), np.nan)
    scores[pair] = model.log_likelihood(swap[pair], lengths[pair], images[pair]).numpy()
    swapped.append(scores)
  true, rolled = np.concatenate(true).astype(np.float64), np.concatenate(rolled)
  margin = (true - np.concatenate(swapped))[~np.isnan(np.concatenate(swapped))]
  return {"bits_per_dim": -true.mean() / config.num_pixels / math.log(2),
          "caption_gain_bits_per_image": (true - rolled).mean() / math.log(2),
          "order_preference": (margin > 0).mean(), "order_margin_nats": margin.mean(),
          "order_pairs": len(margin)}


def _independent_attention_on_digit_words(model, config, files, batches, digit_ids):
  """The mean attention (alpha of the fused decoder's scoring, eq. 8) that stroke pixels inside
  one named digit's box give that digit's word, on the first validation batches."""
  stream = tfrecords.make_dataset(files, config.batch_size, config.image_side,
                                  config.max_caption_len, model_inputs_only=False).take(batches)
  on_word = pixels = 0.0
  for batch in stream:
    ids, lengths, images = (batch[k].numpy() for k in ("caption_ids", "caption_len", "image"))
    alpha = model.decode_fused(model.encode(ids, lengths), lengths, "score",
                               targets=images.reshape(len(ids), -1).astype(np.int32))[2].numpy()
    for i in range(len(ids)):
      targets = _reference_attention_targets(ids[i], batch["boxes"].numpy()[i], digit_ids,
                                             config.image_side, config.max_caption_len,
                                             images[i])
      on_word += (targets * alpha[i]).sum()
      pixels += targets.sum()
  return on_word / pixels


@pytest.mark.parametrize("conditioning", ["attention", "mean", "none"])
def test_the_caption_gain_is_the_log_likelihood_the_true_caption_adds(
    conditioning, mnist_captions_dir, tmp_path):
  """The trainer's validation figures against model.log_likelihood on the same images with the
  true and with rolled captions. The weights are set to large random values, so that a model
  that reads its caption depends on it measurably (a few training steps would barely)."""
  config = _tiny(conditioning=conditioning, **QUIET)
  trainer = training.Trainer(config, mnist_captions_dir, str(tmp_path / "run"),
                             log=lambda *_: None)
  rng = np.random.default_rng(0)
  for weight in trainer.model.weights:
    weight.assign(rng.normal(0, 0.3, weight.shape).astype(np.float32))
  reported = trainer.evaluate(3)
  digit_ids = list(training.digit_word_ids(trainer.vocab).values())
  expected = _independent_validation_figures(trainer.model, config, trainer.validation_files, 3,
                                             digit_ids)
  assert reported["bits_per_dim"] == pytest.approx(expected["bits_per_dim"], rel=1e-5)
  assert reported["caption_gain_bits_per_image"] == pytest.approx(
      expected["caption_gain_bits_per_image"], rel=1e-3)
  if conditioning == "none":  # computed, not written down: the caption is ignored, so exactly 0
    assert reported["caption_gain_bits_per_image"] == 0.0
    assert "order_preference" not in reported  # no caption, no order to prefer
    return
  # (measured: about 0.1 bits per image either way for these weights)
  assert abs(expected["caption_gain_bits_per_image"]) > 0.02
  # Whether the true caption beats the digit-swapped one, image by image: the same count, and
  # not vacuously (measured: 7 of 15 pairs, mean margin -0.24 nats: a flipped sign fails).
  assert 0 < expected["order_preference"] < 1 and expected["order_pairs"] >= 5
  assert reported["order_pairs"] == expected["order_pairs"]
  assert reported["order_preference"] == pytest.approx(expected["order_preference"])
  assert reported["order_margin_nats"] == pytest.approx(expected["order_margin_nats"], rel=1e-3,
                                                        abs=1e-3)
  # Where each digit's pixels look (validation's attention_on_digit_word), for attention only.
  if conditioning == "mean":
    assert "attention_on_digit_word" not in reported
    return
  expected_attention = _independent_attention_on_digit_words(
      trainer.model, config, trainer.validation_files, 3, set(digit_ids))
  assert 0 < expected_attention < 1
  assert reported["attention_on_digit_word"] == pytest.approx(expected_attention, rel=1e-4)


@pytest.mark.parametrize("negatives", ["swap", "neighbours"])
def test_order_contrast_adds_the_swapped_caption_decision_to_the_likelihood(
    negatives, mnist_captions_dir, tmp_path):
  """The trainer's objective with order_contrast against model.log_likelihood under the true
  captions and under the captions with their two digit words swapped (random large weights, so
  that the two differ): NLL + w softplus(-(log p(x|y) - log p(x|y swapped))) / pixels for captions
  of two different digits, the NLL alone for the others. With order_negatives=neighbours the
  negative is the one text.neighbour_of_two_words draws with the step's draws."""
  config = _tiny(order_contrast=3.0, order_negatives=negatives, batch_size=16, **QUIET)
  trainer = training.Trainer(config, mnist_captions_dir, str(tmp_path / "run"),
                             log=lambda *_: None)
  rng = np.random.default_rng(1)
  for weight in trainer.model.weights:
    weight.assign(rng.normal(0, 0.3, weight.shape).astype(np.float32))
  files = trainer.validation_files
  batch = next(iter(tfrecords.make_dataset(files, 16, config.image_side, config.max_caption_len)))
  nll, minimised = (t.numpy() for t in trainer.objective(batch))
  digits = training.digit_word_ids(trainer.vocab)
  assert sorted(digits) == list(range(10))
  # No held-out combination enters training, not even as a swapped negative.
  assert sorted(map(sorted, trainer.order_forbidden)) == sorted(
      sorted((digits[a], digits[b])) for a, b in ((5, 3), (1, 7), (2, 8), (6, 0)))
  if negatives == "swap":
    swapped, eligible = (t.numpy() for t in text_lib.swap_two_words(
        batch["caption_ids"], list(digits.values()), trainer.order_forbidden))
  else:
    draws = training.replica_draws(16, 3, config.seed + training.NEIGHBOUR_SALT, trainer.step)
    swapped, eligible = (t.numpy() for t in text_lib.neighbour_of_two_words(
        batch["caption_ids"], list(digits.values()), draws, trainer.order_forbidden))
  assert 0 < eligible.sum() < 16  # the batch has both kinds
  true_ll = trainer.model.log_likelihood(batch["caption_ids"], batch["caption_len"],
                                         batch["image"]).numpy()
  swapped_ll = trainer.model.log_likelihood(tf.constant(swapped), batch["caption_len"],
                                            batch["image"]).numpy()
  pixels = config.num_pixels
  np.testing.assert_allclose(nll, -true_ll / pixels, rtol=1e-5)
  expected = -true_ll / pixels + np.where(
      eligible, 3.0 * np.logaddexp(0, -(true_ll - swapped_ll)) / pixels, 0)
  np.testing.assert_allclose(minimised, expected, rtol=1e-5)
  # Not vacuous: at these margins a flipped sign would move the objective by far more than rtol.
  assert np.abs(true_ll - swapped_ll)[eligible].max() > 0.1
  trainer.restore()
  losses = [float(trainer.train_step(trainer.train_iterator)[0]) for _ in range(2)]  # it trains
  assert all(np.isfinite(losses))
  with pytest.raises(config_lib.ConfigError, match="order_contrast"):
    _tiny(order_contrast=-1.0)
  with pytest.raises(config_lib.ConfigError, match="order_negatives"):
    _tiny(order_negatives="bag")


def _reference_attention_targets(example_ids, example_boxes, digit_ids, side, length,
                                 image=None, blank=False):
  """attention_targets by loops over pixels: each pixel inside exactly one named digit's box
  (the 32x32 box scaled outward to side x side) holds that digit's word; with ``image`` only
  the pixels of 64 or more; with ``blank`` the pixels under 64, at the other digit's word."""
  targets = np.zeros((side * side, length), np.float32)
  positions = [i for i, word in enumerate(example_ids) if word in digit_ids]
  boxes = [b for b in np.reshape(example_boxes, (-1, 4)) if b[2] > b[0]]
  if not positions or len(positions) != len(boxes):
    return targets
  factor = 32 // side
  cover = [(b[0] // factor, b[1] // factor, -(-b[2] // factor), -(-b[3] // factor)) for b in boxes]
  for j in range(side * side):
    row, col = divmod(j, side)
    inside = [k for k, (r0, c0, r1, c1) in enumerate(cover) if r0 <= row < r1 and c0 <= col < c1]
    if len(inside) != 1:
      continue
    if blank and len(positions) == 2 and image.ravel()[j] < 64:
      targets[j, positions[1 - inside[0]]] = 1
    elif not blank and (image is None or image.ravel()[j] >= 64):
      targets[j, positions[inside[0]]] = 1
  return targets


def test_attention_supervision_teaches_each_digits_strokes_to_attend_to_its_word(
    mnist_captions_dir, tmp_path):
  """attention_supervision adds w * sum over the stroke pixels of one digit's box of
  -log alpha_{j, its word} / pixels to the likelihood (targets checked against loops over the
  records' boxes and pixels, on real records of one and two digits, with a dropped caption
  getting none; "box" takes every pixel of the box), and training on it puts the attention of
  those pixels on their words far more than the likelihood alone does."""
  config = _tiny(attention_supervision=2.0, batch_size=16, train_steps=60, **QUIET)
  files = layout.split_files(mnist_captions_dir, "validation")
  full = next(iter(tfrecords.make_dataset(files, 16, 8, config.max_caption_len,
                                          model_inputs_only=False)))
  batch = next(iter(tfrecords.make_dataset(files, 16, 8, config.max_caption_len,
                                           with_boxes=True)))
  np.testing.assert_array_equal(batch["caption_ids"], full["caption_ids"])
  ids = batch["caption_ids"].numpy()
  ids[0] = text_lib.empty_captions(batch["caption_ids"])[0].numpy()[0]  # a dropped caption
  lengths = batch["caption_len"].numpy()
  lengths[0] = 1
  batch = dict(batch, caption_ids=tf.constant(ids), caption_len=tf.constant(lengths))
  trainer = training.Trainer(config, mnist_captions_dir, str(tmp_path / "supervised"),
                             log=lambda *_: None)
  digit_ids = set(training.digit_word_ids(trainer.vocab).values())
  images = batch["image"].numpy()
  made = {}
  for kind, strokes, blank in (("ink", True, False), ("box", False, False),
                               ("away", True, True)):
    made[kind] = training.attention_targets(batch["caption_ids"], batch["boxes"],
                                            sorted(digit_ids), 8,
                                            batch["image"] if strokes else None, blank).numpy()
    for i in range(16):
      expected = _reference_attention_targets(ids[i], full["boxes"].numpy()[i], digit_ids, 8,
                                              config.max_caption_len,
                                              images[i] if strokes else None, blank)
      np.testing.assert_array_equal(made[kind][i], expected, err_msg=full["caption"].numpy()[i])
    counts = made[kind].sum(axis=(1, 2))
    assert counts[0] == 0
    if not blank:
      assert (counts[1:] > 0).all()
      assert {1, 2} <= set(np.count_nonzero(made[kind].sum(1), axis=1)[1:])  # one or two words
  assert 0 < made["ink"].sum() < 0.8 * made["box"].sum()  # the blank part of boxes is left free
  pairs = np.isin(ids, list(digit_ids)).sum(axis=1) == 2
  assert (made["away"].sum(axis=(1, 2))[pairs] > 0).all()
  assert (made["away"].sum(axis=(1, 2))[~pairs] == 0).all()  # nothing to keep away from
  targets = made["ink"]

  nll, minimised = (t.numpy() for t in trainer.objective(batch))
  _, log_alpha = trainer.model.logits_and_alignments(batch)
  term = -(targets * log_alpha.numpy()).sum(axis=(1, 2)) / config.num_pixels
  assert term.min() >= 0 and term[1:].min() > 0.01
  np.testing.assert_allclose(minimised, nll + 2.0 * term, rtol=1e-5)
  away = made["away"]
  kept_from = -np.log1p(-(away * np.exp(log_alpha.numpy())).sum(-1)).sum(-1) / config.num_pixels
  assert kept_from[pairs].min() > 0
  np.testing.assert_allclose(
      training.attention_supervision_term(config.replace(attention_supervised_pixels="ink_away"),
                                          batch, log_alpha, sorted(digit_ids)).numpy(),
      term + kept_from, rtol=1e-5)

  def attention_on_named_words(model):
    _, log_alpha = model.logits_and_alignments(batch)
    return float((targets * np.exp(log_alpha.numpy())).sum() / targets.sum())

  def train(trainer):
    trainer.restore()
    for _ in range(config.train_steps):
      trainer.train_step(trainer.train_iterator)
    return attention_on_named_words(trainer.model)

  start = attention_on_named_words(trainer.model)
  supervised = train(trainer)
  alone = train(training.Trainer(config.replace(attention_supervision=0.0), mnist_captions_dir,
                                 str(tmp_path / "likelihood"), log=lambda *_: None))
  # (measured: 0.08 at the start, 0.59 supervised, 0.10 by the likelihood alone)
  assert supervised > 0.4 and supervised > alone + 0.3, (start, supervised, alone)
  with pytest.raises(config_lib.ConfigError, match="attention_supervision"):
    _tiny(attention_supervision=-1.0)
  with pytest.raises(config_lib.ConfigError, match="attention_supervision"):
    _tiny(attention_supervision=1.0, conditioning="mean")
  with pytest.raises(config_lib.ConfigError, match="attention_supervised_pixels"):
    _tiny(attention_supervised_pixels="all")


# --- two replicas -------------------------------------------------------------------------------

MIRRORED_SCRIPT = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
from text2pixel import config as config_lib, training
data_dir, out, supervision = sys.argv[1], sys.argv[2], float(sys.argv[3])
config = config_lib.get_preset("tiny").replace(train_steps=4, eval_every=100000,
                                               sample_every=100000, log_every=100000,
                                               ema_decay=0.5, caption_dropout=0.5,
                                               order_contrast=1.0, order_negatives="neighbours",
                                               attention_supervision=supervision)
runs = {}
for strategy in ("mirrored", "default"):
  trainer = training.Trainer(config, data_dir, out + "/" + strategy, strategy,
                             log=lambda *_: None)
  initial = [w.numpy().tolist() for w in trainer.model.weights]
  trainer.restore()
  losses = [float(trainer.train_step(trainer.train_iterator)[0]) for _ in range(4)]
  runs[strategy] = {"replicas": trainer.strategy.num_replicas_in_sync, "initial": initial,
                    "weights": [w.numpy().tolist() for w in trainer.model.weights],
                    "averages": [a.numpy().tolist() for a in trainer.average.averages],
                    "losses": losses}
print(json.dumps(runs))
"""


@pytest.mark.slow
@pytest.mark.parametrize("supervision", [0.0, 1.0])
def test_mirrored_training_on_two_cpu_devices_equals_one_device(supervision, mnist_captions_dir,
                                                                 tmp_path):
  """--strategy mirrored over two logical CPU devices (each replica half of the global batch):
  4 steps of the real train step give the one-device run's losses, weights and weight average
  (with half the captions dropped: each replica drops its slice of the one-device draw; and the
  order term on, its neighbour negatives drawn likewise per replica slice; and without and
  with the attention supervision, each replica's boxes its own)."""
  result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, mnist_captions_dir,
                           str(tmp_path), str(supervision)], cwd=REPO, capture_output=True,
                          text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-3000:]
  runs = json.loads(result.stdout.strip().splitlines()[-1])
  mirrored, default = runs["mirrored"], runs["default"]
  assert mirrored["replicas"] == 2 and default["replicas"] == 1
  np.testing.assert_allclose(mirrored["losses"], default["losses"], rtol=1e-5)
  for before, after in zip(default["initial"], default["weights"]):
    assert not np.array_equal(before, after)  # 4 steps moved every weight
  for start_a, start_b, a, b in zip(mirrored["initial"], default["initial"], mirrored["weights"],
                                    default["weights"]):
    np.testing.assert_array_equal(start_a, start_b)  # the same seeded start
    np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-6)
  for a, b in zip(mirrored["averages"], default["averages"]):  # the weights' moving average
    np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-6)


# --- the weights' moving average (ema_decay) ----------------------------------------------------

def test_a_restart_turns_on_the_moving_average_which_follows_its_formula(
    tiny_run_dir, mnist_captions_dir, tmp_path):
  """ema_decay may be turned on for a run trained without it: the average starts at the restored
  weights, follows a <- d_t a + (1 - d_t) w with d_t = min(decay, (1+t)/(10+t)) (numpy, float64,
  from the weights after each real step), is checkpointed, and is what load_run (so sampling,
  evaluation and export) and the validation's weights hold; the weights as trained go on."""
  run_dir = str(tmp_path / "run")
  shutil.copytree(tiny_run_dir, run_dir)
  tiny = config_lib.get_preset("tiny")
  config = layout.resolve_run_config(run_dir, tiny.replace(ema_decay=0.9, train_steps=63),
                                       {"ema_decay": 0.9, "train_steps": 63}, "tiny")
  assert config.ema_decay == 0.9
  lines = []
  trainer = training.Trainer(config, mnist_captions_dir, run_dir, log=lines.append)
  start = trainer.restore()
  assert start == 60 and any("moving average (ema_decay=0.9) starts here" in l for l in lines)
  weights = trainer.model.trainable_variables
  expected = [w.numpy().astype(np.float64) for w in weights]
  for a, e in zip(trainer.average.averages, expected):
    np.testing.assert_array_equal(a.numpy(), e)
  for t in range(start, start + 3):
    trainer.train_step(trainer.train_iterator)
    trainer.step.assign_add(1)
    decay = min(0.9, (1 + t) / (10 + t))
    expected = [decay * e + (1 - decay) * w.numpy() for e, w in zip(expected, weights)]
  trained = [w.numpy() for w in weights]
  for a, e, w in zip(trainer.average.averages, expected, trained):
    np.testing.assert_allclose(a.numpy(), e, rtol=1e-5, atol=1e-7)
    assert not np.allclose(a.numpy(), w)  # an average, not the latest weights
  with trainer.shown_weights():
    for a, w in zip(trainer.average.averages, weights):
      np.testing.assert_array_equal(w.numpy(), a.numpy())
  for w, value in zip(weights, trained):  # the weights as trained are back for the next step
    np.testing.assert_array_equal(w.numpy(), value)
  trainer.save()
  assert training.checkpoint_has(tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints")),
                                 training.AVERAGE_KEY)
  _, _, loaded = training.load_run(run_dir)
  for w, a in zip(loaded.trainable_variables, trainer.average.averages):
    np.testing.assert_array_equal(w.numpy(), a.numpy())
  resumed = training.Trainer(config, mnist_captions_dir, run_dir, log=lambda *_: None)
  assert resumed.restore() == 63
  for a, b in zip(resumed.average.averages, trainer.average.averages):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


# --- starting from another run's weights (--init_from) ------------------------------------------

def test_a_new_run_starts_from_another_runs_weights_with_a_warm_up(
    tiny_run_dir, mnist_captions_dir, tmp_path):
  """--init_from: step 0, the source run's weights, a fresh optimizer, run.json says where from;
  the learning rate rises linearly over warmup_steps; the first losses are the trained model's
  (far below the ln 256 nats/pixel of an untrained one); a model of another shape is refused."""
  lines = []
  config = _tiny(train_steps=4, warmup_steps=4, **QUIET)
  run_dir = str(tmp_path / "warm")
  trainer = training.Trainer(config, mnist_captions_dir, run_dir, log=lines.append,
                             preset="tiny", init_from=tiny_run_dir)
  assert trainer.restore() == 0
  assert any("started from the weights of" in l and "warms up over 4 steps" in l for l in lines)
  assert any("--seed 1234 is the source run's" in l for l in lines)  # it replays the batches
  _, _, source = training.load_run(tiny_run_dir)
  for a, b in zip(trainer.model.weights, source.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
  assert all(not np.any(v.numpy()) for v in trainer.optimizer.variables)  # slots and iterations
  source_checkpoint = tf.train.latest_checkpoint(os.path.join(tiny_run_dir, "checkpoints"))
  assert layout.read_run_info(run_dir) == {"preset": "tiny",
                                             "init_from": os.path.abspath(tiny_run_dir),
                                             "init_checkpoint": os.path.abspath(source_checkpoint)}
  # ... which is what a learning curve over both runs follows.
  from experiments.lineage_curve import lineage
  source_step = layout.checkpoint_step(source_checkpoint)
  assert lineage(run_dir) == [(os.path.abspath(tiny_run_dir), 0), (run_dir, source_step)]
  rates, losses = [], []
  for _ in range(4):
    rates.append(trainer.current_learning_rate())
    losses.append(float(trainer.train_step(trainer.train_iterator)[0]))
  np.testing.assert_allclose(rates, [config.learning_rate * k / 4 for k in (1, 2, 3, 4)],
                             rtol=1e-6)
  assert trainer.current_learning_rate() == pytest.approx(config.learning_rate)
  assert max(losses) < 0.6 * math.log(256), losses
  with pytest.raises(TrainingError, match=r"is a model of another shape \(word_embedding_dim: "
                                          r"it has 16, this run 24\)"):
    training.Trainer(_tiny(word_embedding_dim=24, **QUIET), mnist_captions_dir,
                     str(tmp_path / "other"), log=lambda *_: None,
                     init_from=tiny_run_dir).restore()
  with pytest.raises(TrainingError, match=r"decoder_units 16 is narrower than the source "
                                          r"model's 32: a warm start can widen a model, not"):
    training.Trainer(_tiny(decoder_units=16, **QUIET), mnist_captions_dir,
                     str(tmp_path / "narrow"), log=lambda *_: None,
                     init_from=tiny_run_dir).restore()


def test_a_wider_run_starts_from_a_narrower_runs_function(tiny_run_dir, mnist_captions_dir,
                                                           tmp_path):
  """--init_from a run with a narrower pixel LSTM and attention layer (text2pixel/widening.py):
  the wide model's log-likelihoods are the narrow model's, and training moves the new units'
  switched-off weights (they are not stuck at zero)."""
  lines = []
  config = _tiny(decoder_units=64, attention_units=24, warmup_steps=2, seed=7, **QUIET)
  trainer = training.Trainer(config, mnist_captions_dir, str(tmp_path / "wide"),
                             log=lines.append, init_from=tiny_run_dir)
  assert trainer.restore() == 0
  assert any("widened decoder_units 32 -> 64, attention_units 16 -> 24" in l for l in lines)
  assert not any("is the source run's" in l for l in lines)  # another seed: other batches
  _, _, source = training.load_run(tiny_run_dir)
  batch = next(iter(trainer._dataset(trainer.validation_files, train=False)))
  args = (batch["caption_ids"], batch["caption_len"], batch["image"])
  np.testing.assert_allclose(trainer.model.log_likelihood(*args).numpy(),
                             source.log_likelihood(*args).numpy(), rtol=1e-5)
  logits = trainer.model.output_layer.kernel
  assert not np.any(logits.numpy()[16:])  # the new a_j units' rows: switched off
  for _ in range(2):
    trainer.train_step(trainer.train_iterator)
  assert np.all(np.abs(logits.numpy()[16:]).sum(axis=1) > 0)


def test_lineage_stops_where_the_parent_no_longer_holds_the_start_and_joins_an_earlier_file(
    tmp_path):
  """The shipped in-progress folder is overwritten by each new snapshot, so a run started from
  an older snapshot names a parent whose run.json may point back at the run: the chain stops
  there instead of going round. --earlier's file then supplies the lineage before it, cut at the
  step the run started from."""
  from experiments.lineage_curve import join_earlier, lineage
  snapshot, child = str(tmp_path / "snapshot"), str(tmp_path / "child")
  for run_dir, info in ((snapshot, {"init_from": child,
                                    "init_checkpoint": child + "/checkpoints/ckpt-9"}),
                        (child, {"init_from": snapshot,
                                 "init_checkpoint": snapshot + "/checkpoints/ckpt-30"})):
    os.makedirs(os.path.join(run_dir, "checkpoints"))
    with open(os.path.join(run_dir, layout.RUN_INFO), "w") as f:
      json.dump(info, f)
  assert lineage(child) == [(child, 30)]  # the snapshot leads back to the child: not its parent
  # A parent that has since deleted the checkpoint (keep_checkpoints) is still the parent.
  with open(os.path.join(snapshot, layout.RUN_INFO), "w") as f:
    json.dump({}, f)
  assert lineage(child) == [(snapshot, 0), (child, 30)]
  earlier = {"lineage": [{"run": "a", "started_at_parent_step": 0},
                         {"run": "b", "started_at_parent_step": 20}],
             "measured": {"m": {"25": [0.5, 0.4]}},
             "rows": [{"run": "a", "run_step": 10, "step": 10, "hours": 1.0},
                      {"run": "a", "run_step": 20, "step": 20, "hours": 2.0},
                      {"run": "b", "run_step": 10, "step": 30, "hours": 2.5},
                      {"run": "b", "run_step": 30, "step": 50, "hours": 3.5},
                      {"run": "b", "run_step": 40, "step": 60, "hours": 4.0}]}
  rows, names, measured, starts, step, hours = join_earlier(earlier, 30)
  assert [r["step"] for r in rows] == [10, 20, 30, 50]  # b's steps after 30 are not the lineage
  assert (step, hours) == (50, 3.5) and starts == [(0, 0.0), (20, 2.0)]
  assert names == earlier["lineage"] and measured == earlier["measured"]
  with pytest.raises(Exception, match="has no validation at step 35"):
    join_earlier(earlier, 35)
