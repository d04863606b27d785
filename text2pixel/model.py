"""alignPixelRNN: the paper's model, with its equations named where they are computed.

Encoder (section 4.1): caption words y_1..y_N -> word embedding -> bidirectional LSTM; the
annotation vectors are h^lang_i = [forward h_i ; backward h_i].

Decoder (section 4.2): a pixel LSTM over the image in raster order,
  eq. 6   h^pix_j = f(h^pix_{j-1}, x_{j-1}, c^lang_j)
  eq. 7   c^lang_j = sum_i alpha_ji h^lang_i
  eq. 8   alpha_ji = softmax_i(e_ji)
  eq. 9   e_ji = a(h^pix, h^lang_i)          (Luong's multiplicative score, as the paper says)
  eq. 5   p(x_j | x_<j, y) = softmax(W_out a_j),  a_j = tanh(W_c [h^pix_j ; c^lang_j])
and eq. 1 / 5: log p(x | y) = sum_j log p(x_j | x_<j, y), the exact likelihood used for ranking.

These are exactly `tfa.seq2seq.AttentionWrapper(PixelLSTMCell, LuongAttention)`: the wrapper
feeds the previous attention vector a_{j-1} with the pixel input (Luong's input feeding), runs the
LSTM (eq. 6), scores the annotations with LuongAttention (eq. 9), normalises them (eq. 8), takes
the context (eq. 7) and the attention vector a_j. Luong scores with the current LSTM state rather
than h^pix_{j-1}; the paper names Luong attention explicitly, so we follow Luong.

Baselines (for the paper's alignDRAW vs noalignDRAW comparison): ``conditioning="mean"`` feeds
the mean of the annotation vectors at every step instead of attending; ``"none"`` is an
unconditional pixel LSTM.
"""

from __future__ import annotations

import math
from typing import Dict, NamedTuple, Optional, Tuple

import tensorflow as tf
import tensorflow_addons as tfa

from text2pixel.config import Config

START_SYMBOL = 256  # id of the "previous pixel" before the first pixel (pixels are 0..255)
LN2 = math.log(2.0)


class PixelLSTMCell(tf.keras.layers.AbstractRNNCell):
  """The pixel LSTM of eq. 6, optionally told where it is and what lies above it.

  Two optional, causal extensions (both off in the ``paper`` preset):
  * ``position_embedding_dim`` > 0: a learned row and column embedding joins the input, so the
    LSTM need not count steps to know where in the raster it is;
  * ``above_context`` = k > 0: the embeddings of the k pixels centred above the current one (the
    row above, already generated) join the input, like the input-to-state convolution over the
    previous row of section 3.1 (eq. 2). A 1-D raster LSTM otherwise has to carry a pixel 32 steps
    to use it in the next row.
  The state carries the step index, a shift register of the last ``side + k // 2`` pixel ids and a
  constant context vector (the ``mean`` baseline), so every tfa decoder (greedy, sampling, beam
  search) runs this cell unchanged. The previous pixel's id arrives as the input's last channel.
  """

  def __init__(self, units: int, image_side: int, position_embedding_dim: int = 0,
               above_context: int = 0, above_embedding_dim: int = 0, context_dim: int = 0,
               **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.image_side = image_side
    self.position_embedding_dim = position_embedding_dim
    self.above_context = above_context
    self.context_dim = context_dim
    self.history = image_side + above_context // 2 if above_context else 1
    self.lstm = tf.keras.layers.LSTMCell(units, name="lstm")
    if position_embedding_dim:
      self.row_embedding = tf.keras.layers.Embedding(image_side, position_embedding_dim,
                                                     name="row_embedding")
      self.col_embedding = tf.keras.layers.Embedding(image_side, position_embedding_dim,
                                                     name="col_embedding")
    if above_context:
      self.above_embedding = tf.keras.layers.Embedding(257, above_embedding_dim,
                                                       name="above_embedding")

  @property
  def state_size(self):
    # [h, c, step, recent pixel ids, context]; all float so Keras' RNN treats them alike.
    return [self.units, self.units, 1, self.history, max(self.context_dim, 1)]

  @property
  def output_size(self):
    return self.units

  def get_initial_state(self, inputs=None, batch_size=None, dtype=None):
    dtype = dtype or tf.float32
    zeros = lambda n: tf.zeros([batch_size, n], dtype)
    return [zeros(self.units), zeros(self.units), zeros(1),
            tf.fill([batch_size, self.history], tf.cast(START_SYMBOL, dtype)),
            zeros(max(self.context_dim, 1))]

  def call(self, inputs, states):
    h, c, step, recent, context = states
    pixel_features, previous_id = inputs[:, :-1], inputs[:, -1:]
    pieces = [pixel_features]
    if self.position_embedding_dim:
      index = tf.cast(step[:, 0], tf.int32)
      pieces += [self.row_embedding(index // self.image_side),
                 self.col_embedding(index % self.image_side)]
    if self.above_context:
      # After the shift, recent holds x_{j-history} .. x_{j-1}; its first k entries are the
      # pixels above-left .. above-right of pixel j.
      recent = tf.concat([recent[:, 1:], previous_id], axis=1)
      window = tf.cast(recent[:, :self.above_context], tf.int32)
      embedded = self.above_embedding(window)
      pieces.append(tf.reshape(embedded, [-1, self.above_context * embedded.shape[-1]]))
    if self.context_dim:
      pieces.append(context)
    x = tf.concat(pieces, -1) if len(pieces) > 1 else pixel_features
    output, (h, c) = self.lstm(x, [h, c])
    return output, [h, c, step + 1.0, recent, context]


class _Untracked:
  def __init__(self):
    self.cells: Dict[bool, tf.keras.layers.Layer] = {}


class AlignPixelRNN(tf.keras.Model):
  """Caption -> annotation vectors -> pixel LSTM with attention -> 256-way softmax per pixel."""

  def __init__(self, config: Config, vocab_size: int, **kwargs):
    super().__init__(name="align_pixel_rnn", **kwargs)
    self.config = config
    self.vocab_size = vocab_size
    c = config
    conditioned = c.conditioning != "none"
    if conditioned:
      # Section 4.1: word embedding (512) and a bidirectional LSTM (512 each way).
      self.word_embedding = tf.keras.layers.Embedding(vocab_size, c.word_embedding_dim,
                                                      name="word_embedding")
      self.encoder = tf.keras.layers.Bidirectional(
          tf.keras.layers.LSTM(c.encoder_units, return_sequences=True), merge_mode="concat",
          name="encoder_bilstm")
    # The previous pixel x_{j-1} (eq. 6) enters through an embedding of 256 values + start.
    self.pixel_embedding = tf.keras.layers.Embedding(c.num_levels + 1, c.pixel_embedding_dim,
                                                     name="pixel_embedding")
    context_dim = 2 * c.encoder_units if c.conditioning == "mean" else 0
    self.pixel_cell = PixelLSTMCell(c.decoder_units, c.image_side, c.position_embedding_dim,
                                    c.above_context, c.pixel_embedding_dim, context_dim,
                                    name="pixel_lstm")
    if c.conditioning == "attention":
      # eq. 9: Luong's score e_ji = h^pix_j . W_a h^lang_i (memory projected to the LSTM size).
      self.attention_mechanism = tfa.seq2seq.LuongAttention(c.decoder_units,
                                                            name="luong_attention")
      # a_j = tanh(W_c [h^pix_j ; c^lang_j]), shared by the training and the sampling wrappers.
      self.attention_layer = tf.keras.layers.Dense(c.attention_units, activation="tanh",
                                                   use_bias=False, name="attention_layer")
    # eq. 5: softmax over the 256 pixel values, computed in float32 under mixed precision.
    self.output_layer = tf.keras.layers.Dense(c.num_levels, dtype="float32", name="pixel_logits")
    # Plain Python holder: the wrappers own no weights (they share the cell, the mechanism and
    # the attention layer), and Keras must not track them into checkpoints.
    self._wrappers = _Untracked()

  # --- encoder ------------------------------------------------------------------------------

  def encode(self, caption_ids: tf.Tensor, caption_len: tf.Tensor) -> Optional[tf.Tensor]:
    """Annotation vectors h^lang [batch, N, 2 * encoder_units] (section 4.1).

    The mask comes from the caption length, not from pad ids, so whatever follows a caption in
    its padded row never reaches the backward LSTM.
    """
    if self.config.conditioning == "none":
      return None
    embedded = self.word_embedding(caption_ids)
    mask = tf.sequence_mask(caption_len, tf.shape(caption_ids)[1])
    return self.encoder(embedded, mask=mask)

  # --- decoder ------------------------------------------------------------------------------

  def decoder_cell(self, alignment_history: bool = False) -> tf.keras.layers.Layer:
    """The pixel LSTM, wrapped by AttentionWrapper when the model attends (eqs. 6-9)."""
    if self.config.conditioning != "attention":
      return self.pixel_cell
    if alignment_history not in self._wrappers.cells:
      self._wrappers.cells[alignment_history] = tfa.seq2seq.AttentionWrapper(
          self.pixel_cell, self.attention_mechanism, attention_layer=self.attention_layer,
          alignment_history=alignment_history, output_attention=True,
          # Attention first, so the pixel id stays the input's last channel (see PixelLSTMCell).
          cell_input_fn=lambda inputs, attention: tf.concat([attention, inputs], -1),
          name="attention_wrapper")
    return self._wrappers.cells[alignment_history]

  def decoder_initial_state(self, annotations: Optional[tf.Tensor], caption_len: tf.Tensor,
                            batch_size, alignment_history: bool = False):
    """Sets up the attention memory and returns (cell, initial state) for a batch.

    ``annotations`` and ``caption_len`` may already be tiled (samples per caption, beams).
    """
    cell = self.decoder_cell(alignment_history)
    dtype = self.compute_dtype_for_state()
    if self.config.conditioning == "attention":
      # The memory's sequence length masks padding so it is never attended (eq. 8 over real words).
      self.attention_mechanism.setup_memory(annotations, memory_sequence_length=caption_len)
      return cell, cell.get_initial_state(batch_size=batch_size, dtype=dtype)
    state = self.pixel_cell.get_initial_state(batch_size=batch_size, dtype=dtype)
    if self.config.conditioning == "mean":
      mask = tf.sequence_mask(caption_len, tf.shape(annotations)[1], dtype=annotations.dtype)
      mean = tf.reduce_sum(annotations * mask[..., None], 1) / tf.reduce_sum(mask, 1,
                                                                                keepdims=True)
      state[4] = tf.cast(mean, dtype)
    return cell, state

  def compute_dtype_for_state(self):
    return tf.as_dtype(self.pixel_embedding.compute_dtype)

  def pixel_input(self, pixel_ids: tf.Tensor) -> tf.Tensor:
    """The decoder input for previous pixel ids: their embedding and the id itself (last channel).

    This is also the ``embedding_fn`` the tfa samplers call on the ids they draw.
    """
    embedded = self.pixel_embedding(pixel_ids)
    return tf.concat([embedded, tf.cast(pixel_ids, embedded.dtype)[..., None]], axis=-1)

  def teacher_forced_inputs(self, images: tf.Tensor) -> tf.Tensor:
    """Decoder inputs x_{j-1}: the start symbol, then every pixel but the last."""
    pixels = tf.reshape(tf.cast(images, tf.int32), [-1, self.config.num_pixels])
    start = tf.fill([tf.shape(pixels)[0], 1], START_SYMBOL)
    return self.pixel_input(tf.concat([start, pixels[:, :-1]], axis=1))

  def logits_from_annotations(self, annotations, caption_len, images) -> tf.Tensor:
    """Teacher-forced logits [batch, num_pixels, 256]; the whole raster in one graph loop."""
    inputs = self.teacher_forced_inputs(images)
    batch = tf.shape(inputs)[0]
    cell, state = self.decoder_initial_state(annotations, caption_len, batch)
    rnn = tf.keras.layers.RNN(cell, return_sequences=True, name="pixel_rnn")
    # tf.keras.layers.RNN is rebuilt per call but holds no weights of its own: they live in
    # the cell, the attention mechanism and the layers created in __init__.
    outputs = rnn(inputs, initial_state=tf.nest.flatten(state) if
                  self.config.conditioning != "attention" else state)
    return self.output_layer(outputs)

  def call(self, inputs: Dict[str, tf.Tensor], training=None) -> tf.Tensor:
    annotations = self.encode(inputs["caption_ids"], inputs["caption_len"])
    return self.logits_from_annotations(annotations, inputs["caption_len"], inputs["image"])

  # --- likelihood ---------------------------------------------------------------------------

  def pixel_log_probs(self, logits: tf.Tensor, images: tf.Tensor) -> tf.Tensor:
    """log p(x_j | x_<j, y) for every pixel: [batch, num_pixels] (float32)."""
    targets = tf.reshape(tf.cast(images, tf.int32), [-1, self.config.num_pixels])
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
    return tf.gather(log_probs, targets, batch_dims=2)

  def log_likelihood(self, caption_ids, caption_len, images) -> tf.Tensor:
    """Exact log p(x | y) in nats per image (eq. 1), [batch]."""
    logits = self(dict(caption_ids=caption_ids, caption_len=caption_len, image=images))
    return tf.reduce_sum(self.pixel_log_probs(logits, images), axis=1)

  def log_likelihood_matrix(self, caption_ids, caption_len, images) -> tf.Tensor:
    """log p(image j | caption i) for every pair: [captions, images] (retrieval, eq. 1).

    The encoder runs once per caption; its annotations are then repeated for every image.
    """
    num_captions, num_images = tf.shape(caption_ids)[0], tf.shape(images)[0]
    annotations = self.encode(caption_ids, caption_len)
    if annotations is not None:
      annotations = tf.repeat(annotations, num_images, axis=0)
    lengths = tf.repeat(caption_len, num_images, axis=0)
    tiled_images = tf.tile(images, [num_captions, 1, 1])
    logits = self.logits_from_annotations(annotations, lengths, tiled_images)
    scores = tf.reduce_sum(self.pixel_log_probs(logits, tiled_images), axis=1)
    return tf.reshape(scores, [num_captions, num_images])


def sequence_loss(logits: tf.Tensor, images: tf.Tensor, num_pixels: int,
                  weights: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Weighted sequence cross-entropy (section 6), mean nats per pixel over the batch."""
  targets = tf.reshape(tf.cast(images, tf.int32), [-1, num_pixels])
  if weights is None:
    weights = tf.ones_like(targets, tf.float32)
  return tfa.seq2seq.sequence_loss(tf.cast(logits, tf.float32), targets, weights)


def nats_to_bits_per_dim(nats_per_pixel):
  return nats_per_pixel / LN2


def build(config: Config, vocab_size: int) -> AlignPixelRNN:
  """A model with its weights created (so checkpoints restore into it immediately)."""
  model = AlignPixelRNN(config, vocab_size)
  side, length = config.image_side, config.max_caption_len
  model(dict(caption_ids=tf.ones([1, length], tf.int32), caption_len=tf.ones([1], tf.int32),
             image=tf.zeros([1, side, side], tf.uint8)))
  return model
