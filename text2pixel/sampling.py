"""Image generation with tfa.seq2seq decoders over the trained cell: greedy, ancestral, beam.

Every sampler returns, per image, its pixels (uint8), its total log-probability under the model
at temperature 1 (nats, the same quantity teacher-forced scoring gives), and the attention weights
over the caption's words for every pixel (eq. 8's alpha_ji), when the model attends.

Greedy and ancestral sampling run either tfa's decoders over the samplers' cell (``loop="graph"``,
what an export holds) or the fused C++ decoder (``loop="fused"``, text2pixel/kernels; the default
of a run whose config says so), which computes the same. Ancestral sampling draws pixel j of image
b by inverse CDF at one uniform u[b, j] from ``tf.random.stateless_uniform`` keyed by the seed, in
both: a seed gives the same images for the same captions in any process, a reloaded SavedModel
too (up to float rounding where a uniform falls within ~1e-7 of a boundary of the CDF).
"""

from __future__ import annotations

from typing import Dict, Optional

import tensorflow as tf
import tensorflow_addons as tfa

from text2pixel.model import START_SYMBOL, AlignPixelRNN
from text2pixel import text as text_lib

METHODS = ("greedy", "sample", "beam")


class StatelessSampleEmbeddingSampler(tfa.seq2seq.SampleEmbeddingSampler):
  """tfa's ancestral sampler, drawing from softmax(logits / T) by inverse CDF at given uniforms.

  ``uniforms`` [batch, pixels] come from one seeded stateless draw (:func:`seeded_uniforms`), the
  same the fused decoder reads, so both paths give the same images for a seed.
  """

  def __init__(self, embedding_fn, softmax_temperature, uniforms: tf.Tensor):
    super().__init__(embedding_fn, softmax_temperature=softmax_temperature)
    self.uniforms = uniforms

  def sample(self, time, outputs, state):
    return inverse_cdf(tf.cast(outputs, tf.float32) / self.softmax_temperature,
                       self.uniforms[:, time])


class GuidedSampleEmbeddingSampler(StatelessSampleEmbeddingSampler):
  """Classifier-free guidance (an extension, not the paper's): rows come in pairs (2i: the
  caption, 2i + 1: the empty caption), and both rows of pair i take the pixel drawn from
  softmax((l_empty + s (l_caption - l_empty)) / T) at uniform i; s = 1 is plain sampling, s > 1
  exaggerates what the caption changes. Greedy (``uniforms`` None) takes its argmax."""

  def __init__(self, embedding_fn, softmax_temperature, uniforms: Optional[tf.Tensor], scale):
    super().__init__(embedding_fn, softmax_temperature, uniforms)
    self.scale = scale

  def sample(self, time, outputs, state):
    guided = guided_logits(outputs, self.scale)
    if self.uniforms is None:
      ids = tf.argmax(guided, axis=-1, output_type=tf.int32)
    else:
      ids = inverse_cdf(guided / self.softmax_temperature, self.uniforms[:, time])
    return tf.repeat(ids, 2, axis=0)


def guided_logits(logits: tf.Tensor, scale) -> tf.Tensor:
  """[2n, ...] logits of (caption, empty caption) row pairs -> [n, ...] guided logits."""
  pairs = tf.reshape(tf.cast(logits, tf.float32), tf.concat([[-1, 2], tf.shape(logits)[1:]], 0))
  caption, empty = pairs[:, 0], pairs[:, 1]
  return empty + tf.cast(scale, tf.float32) * (caption - empty)


def with_empty_captions(caption_ids: tf.Tensor, caption_len: tf.Tensor):
  """Each caption followed by the empty caption: the row pairs guidance decodes."""
  empty_ids, empty_len = text_lib.empty_captions(caption_ids)
  ids = tf.reshape(tf.stack([caption_ids, empty_ids], axis=1), [-1, tf.shape(caption_ids)[1]])
  lengths = tf.reshape(tf.stack([caption_len, tf.cast(empty_len, caption_len.dtype)], 1), [-1])
  return ids, lengths


def inverse_cdf(logits: tf.Tensor, uniforms: tf.Tensor) -> tf.Tensor:
  """The first value whose cumulative probability under softmax(logits) exceeds the uniform."""
  cdf = tf.cumsum(tf.nn.softmax(logits), axis=-1)
  count = tf.reduce_sum(tf.cast(cdf <= uniforms[:, None], tf.int32), axis=-1)
  return tf.minimum(count, tf.shape(logits)[-1] - 1)


def seeded_uniforms(batch, pixels: int, seed) -> tf.Tensor:
  """One uniform per (image, pixel), keyed by the seed."""
  return tf.random.stateless_uniform([batch, pixels], seed=tf.stack([tf.cast(seed, tf.int32), 0]))


def _images_from_ids(ids: tf.Tensor, side: int) -> tf.Tensor:
  return tf.cast(tf.reshape(ids, [-1, side, side]), tf.uint8)


class _BasicDecoder(tfa.seq2seq.BasicDecoder):
  """tfa's BasicDecoder, told that the logits are float32 (tfa assumes the first state's dtype,
  which is bfloat16 under mixed_bfloat16 while the output layer stays float32)."""

  @property
  def output_dtype(self):
    dtype = super().output_dtype
    return dtype._replace(rnn_output=tf.nest.map_structure(lambda _: tf.float32,
                                                           dtype.rnn_output))


class _BeamSearchDecoder(tfa.seq2seq.BeamSearchDecoder):
  """tfa's BeamSearchDecoder with float32 scores, for the same reason as :class:`_BasicDecoder`."""

  def initialize(self, *args, **kwargs):
    finished, inputs, state = super().initialize(*args, **kwargs)
    return finished, inputs, state._replace(log_probs=tf.cast(state.log_probs, tf.float32))

  @property
  def output_dtype(self):
    dtype = super().output_dtype
    return dtype._replace(scores=tf.nest.map_structure(lambda _: tf.float32, dtype.scores))


def _alignments(state, model: AlignPixelRNN) -> Optional[tf.Tensor]:
  if not model.conditioning.attends:
    return None
  history = state.alignment_history
  stacked = history.stack() if isinstance(history, tf.TensorArray) else history
  return tf.transpose(stacked, [1, 0, 2])  # [batch, pixels, words]


def generate(model: AlignPixelRNN, caption_ids: tf.Tensor, caption_len: tf.Tensor, method: str,
             num_samples: int = 1, temperature=1.0, beam_width: int = 4,
             seed=None, loop: Optional[str] = None, guidance=None) -> Dict[str, tf.Tensor]:
  """Images for each caption: images [B, S, side, side] uint8, log_prob [B, S], attention
  [B, S, pixels, words] (zeros for models without attention).

  For ``beam`` the S = beam_width beams come back best first (num_samples is ignored); for
  ``greedy`` every sample is the same image, so S = 1 is the useful value. ``loop``: "fused" or
  "graph" for greedy and ancestral sampling (beam search is always tfa's); default the config's
  ``pixel_loop``. ``guidance`` (greedy and ancestral): classifier-free guidance at that scale
  (GuidedSampleEmbeddingSampler; log_prob is then under the guided distribution, the attention
  the caption's); default the config's ``guidance``; 1 is plain sampling. Beam search ignores
  the config's guidance and refuses another.
  """
  if method not in METHODS:
    raise ValueError(f"unknown sampling method '{method}'; choose one of {METHODS}")
  if method == "beam" and guidance not in (None, 1.0):
    raise ValueError("guidance is for greedy and ancestral sampling, not beam search")
  if guidance is None and method != "beam":
    guidance = model.config.guidance
  if guidance == 1.0:
    guidance = None  # the same distribution without the empty caption's rows
  if guidance is not None and not model.conditioning.encodes:
    raise ValueError("guidance needs a model that reads the caption")
  config = model.config
  side, pixels = config.image_side, config.num_pixels
  batch = tf.shape(caption_ids)[0]
  words = tf.shape(caption_ids)[1]

  if method == "beam":
    annotations = model.encode(caption_ids, caption_len)
    width = beam_width
    tiled = None if annotations is None else tfa.seq2seq.tile_batch(annotations, width)
    tiled_len = tfa.seq2seq.tile_batch(caption_len, width)
    cell, state = model.decoder_initial_state(tiled, tiled_len, batch * width,
                                              alignment_history=True)
    decoder = _BeamSearchDecoder(
        cell, beam_width=width, embedding_fn=model.pixel_input,
        output_layer=model.output_layer, maximum_iterations=pixels)
    outputs, final_state, _ = decoder(
        None, start_tokens=tf.fill([batch], START_SYMBOL), end_token=START_SYMBOL,
        initial_state=state)
    ids = tf.transpose(outputs.predicted_ids, [0, 2, 1])  # [B, beam, pixels], best beam first
    images = tf.reshape(_images_from_ids(ids, side), [batch, width, side, side])
    log_prob = final_state.log_probs                       # [B, beam]: sum of log p per pixel
    # Row b * width + k of the history is beam k of caption b (tile_batch's order), reordered by
    # the decoder along each final beam's ancestry (reorder_tensor_arrays).
    attention = _alignments(final_state.cell_state, model)
    return _pack(images, log_prob, attention, batch, width, pixels, words)

  samples = num_samples
  flat = batch * samples
  uniforms = (seeded_uniforms(flat, pixels, seed if seed is not None else 0)
              if method == "sample" else None)
  row_ids = tf.repeat(caption_ids, samples, axis=0)
  lengths = tf.repeat(caption_len, samples, axis=0)
  if guidance is not None:  # each row followed by the empty caption's
    row_ids, lengths = with_empty_captions(row_ids, lengths)
  rows = tf.shape(row_ids)[0]
  annotations = model.encode(row_ids, lengths)
  first_of_pair = (lambda x: x[::2]) if guidance is not None else (lambda x: x)
  if (loop or config.pixel_loop) == "fused":
    row_uniforms = (tf.repeat(uniforms, 2, axis=0) if uniforms is not None and guidance is not None
                    else uniforms)  # the op reads row 2i's uniform for pair i
    ids, log_probs, alpha = model.decode_fused(annotations, lengths, method,
                                               uniforms=row_uniforms, temperature=temperature,
                                               guidance=guidance)
    ids, log_probs, alpha = first_of_pair(ids), first_of_pair(log_probs), first_of_pair(alpha)
    images = tf.reshape(_images_from_ids(ids, side), [batch, samples, side, side])
    log_prob = tf.reshape(tf.reduce_sum(log_probs, axis=1), [batch, samples])
    return _pack(images, log_prob, alpha if model.conditioning.attends else None,
                 batch, samples, pixels, words)
  cell, state = model.decoder_initial_state(annotations, lengths, rows, alignment_history=True)
  if guidance is not None:
    sampler = GuidedSampleEmbeddingSampler(model.pixel_input, tf.cast(temperature, tf.float32),
                                           uniforms, guidance)
  elif method == "greedy":
    sampler = tfa.seq2seq.GreedyEmbeddingSampler(model.pixel_input)
  else:
    sampler = StatelessSampleEmbeddingSampler(
        model.pixel_input, tf.cast(temperature, tf.float32), uniforms)
  decoder = _BasicDecoder(cell, sampler, output_layer=model.output_layer,
                          maximum_iterations=pixels)
  outputs, final_state, _ = decoder(None, initial_state=state,
                                    start_tokens=tf.fill([rows], START_SYMBOL),
                                    end_token=START_SYMBOL)
  ids = first_of_pair(outputs.sample_id)
  logits = (outputs.rnn_output if guidance is None
            else guided_logits(outputs.rnn_output, guidance))
  images = tf.reshape(_images_from_ids(ids, side), [batch, samples, side, side])
  log_prob = tf.reshape(tf.reduce_sum(model.pixel_log_probs(logits, ids), axis=1),
                        [batch, samples])
  attention = _alignments(final_state, model)
  return _pack(images, log_prob, None if attention is None else first_of_pair(attention),
               batch, samples, pixels, words)


def _pack(images, log_prob, attention, batch, samples, pixels, words):
  """attention [batch * samples, pixels, words] (or None) -> [batch, samples, pixels, words]."""
  if attention is None:
    attention = tf.zeros([batch, samples, pixels, words], tf.float32)
  else:
    attention = tf.reshape(attention, [batch, samples, pixels, -1])
  return {"images": images, "log_prob": log_prob,
          "attention": tf.cast(attention[..., :words], tf.float32)}


def make_generate_fn(model: AlignPixelRNN, method: str, num_samples: int = 1,
                     beam_width: int = 4, loop: Optional[str] = None,
                     guidance: Optional[float] = None):
  """A tf.function with a fixed signature (one trace per batch size) for a method.

  Without autograph: tfa's decoders loop with tf.while_loop and every condition in the model is
  static Python, so there is nothing for it to convert; it would transpile ~100 functions of tfa
  and Keras on a process's first trace (a tiny model's greedy trace 11.6 s -> 2.3 s without it,
  the same images: tests/test_sampling_export.py).
  """
  length = model.config.max_caption_len

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None, length], tf.int32), tf.TensorSpec([None], tf.int32),
      tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int32)])
  def generate_fn(caption_ids, caption_len, temperature, seed):
    return generate(model, caption_ids, caption_len, method, num_samples=num_samples,
                    temperature=temperature, beam_width=beam_width, seed=seed, loop=loop,
                    guidance=guidance)
  return generate_fn
