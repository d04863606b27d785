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

Training and scoring need the logits of known images (teacher forcing); running that cell one
pixel at a time (:meth:`AlignPixelRNN.logits_stepwise`) is the reference, and
text2pixel/fast_loops.py computes the same function fast (a fused C++ op, or a TensorFlow loop
built for gradients; tests compare them). Under mixed precision the LSTM gates and cell state,
eqs. 7-9 and the softmax of eq. 5 stay float32; the matrix products run in the compute dtype.

Baselines (for the paper's alignDRAW vs noalignDRAW comparison): ``conditioning="mean"`` feeds
the mean of the annotation vectors at every step instead of attending; ``"none"`` is an
unconditional pixel LSTM. Each is a :class:`Conditioning` object the model asks.
"""

from __future__ import annotations

from typing import Dict, Optional

import tensorflow as tf
import tensorflow_addons as tfa

from text2pixel.config import Config

START_SYMBOL = 256  # id of the "previous pixel" before the first pixel (pixels are 0..255)


class PixelLSTMCell(tf.keras.layers.AbstractRNNCell):
  """The pixel LSTM of eq. 6, optionally told where it is and what lies above it.

  Its input is [a_{j-1} ; features_j] and its gate pre-activation is
      z_j = features_j W_in + [a_{j-1} ; h^pix_{j-1}] W_rec + b,
  the standard LSTM (Keras' gate order i, f, c, o) with its kernel split by rows: W_in sees only
  what is known before the loop (the previous pixel's embedding, position, pixels above, the mean
  context), W_rec what needs the recurrence. The split changes nothing that is computed; it lets
  teacher forcing (text2pixel/fast_loops.py) apply W_in to all pixels at once, outside the loop.

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

  def __init__(self, units: int, image_side: int, pixel_embedding_dim: int,
               attention_dim: int = 0, position_embedding_dim: int = 0, above_context: int = 0,
               context_dim: int = 0, **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.image_side = image_side
    self.pixel_embedding_dim = pixel_embedding_dim
    self.attention_dim = attention_dim
    self.position_embedding_dim = position_embedding_dim
    self.above_context = above_context
    self.context_dim = context_dim
    self.history = image_side + above_context // 2 if above_context else 1
    if position_embedding_dim:
      self.row_embedding = tf.keras.layers.Embedding(image_side, position_embedding_dim,
                                                     name="row_embedding")
      self.col_embedding = tf.keras.layers.Embedding(image_side, position_embedding_dim,
                                                     name="col_embedding")
    if above_context:
      self.above_embedding = tf.keras.layers.Embedding(257, pixel_embedding_dim,
                                                       name="above_embedding")
    for name in ("row_embedding", "col_embedding", "above_embedding"):
      if hasattr(self, name):  # built now: teacher forcing reads their matrices
        getattr(self, name).build((None,))
    # Rows of W_in, in this order: previous pixel, row, column, each pixel above, context.
    self.feature_sizes = ([pixel_embedding_dim] +
                          [position_embedding_dim] * (2 if position_embedding_dim else 0) +
                          [pixel_embedding_dim] * above_context +
                          [context_dim] * (1 if context_dim else 0))
    gates = 4 * units
    self.input_kernel = self.add_weight("input_kernel", [sum(self.feature_sizes), gates],
                                        initializer="glorot_uniform")
    self.recurrent_kernel = self.add_weight(
        "recurrent_kernel", [attention_dim + units, gates],
        initializer=_AttentionAndRecurrentInitializer(attention_dim))
    self.bias = self.add_weight("bias", [gates], initializer=_unit_forget_bias)
    self.built = True

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
    # c, the step index and the pixel ids are float32 whatever the compute dtype: bfloat16 counts
    # exactly only up to 256, so a bfloat16 step index would stop at pixel 256.
    return [zeros(self.units), tf.zeros([batch_size, self.units], tf.float32),
            tf.zeros([batch_size, 1], tf.float32),
            tf.fill([batch_size, self.history], tf.cast(START_SYMBOL, tf.float32)),
            zeros(max(self.context_dim, 1))]

  def lstm_update(self, z, c):
    """h_j, c_j from the gate pre-activations z_j and c_{j-1} (the LSTM of eq. 6).

    The gates and the cell state are float32 even under mixed precision: c_j sums 1024 small
    updates, and in bfloat16 (8 bits of mantissa) they get lost. Only h_j, which feeds the
    matrix products, is cast to the compute dtype.
    """
    i, f, g, o = tf.split(tf.cast(z, tf.float32), 4, axis=-1)
    c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
    return tf.cast(tf.sigmoid(o) * tf.tanh(c), z.dtype), c

  def call(self, inputs, states):
    """One step as the samplers run it: input [a_{j-1} ; embedding of x_{j-1} ; id of x_{j-1}]."""
    h, c, step, recent, context = states
    attention, pixel_features, previous_id = tf.split(inputs, [self.attention_dim, -1, 1], -1)
    pieces = [pixel_features]
    if self.position_embedding_dim:
      index = tf.cast(step[:, 0], tf.int32)
      pieces += [self.row_embedding(index // self.image_side),
                 self.col_embedding(index % self.image_side)]
    if self.above_context:
      # After the shift, recent holds x_{j-history} .. x_{j-1}; its first k entries are the
      # pixels above-left .. above-right of pixel j.
      recent = tf.concat([recent[:, 1:], tf.cast(previous_id, recent.dtype)], axis=1)
      window = tf.cast(recent[:, :self.above_context], tf.int32)
      embedded = self.above_embedding(window)
      pieces.append(tf.reshape(embedded, [-1, self.above_context * embedded.shape[-1]]))
    if self.context_dim:
      pieces.append(context)
    features = tf.concat(pieces, -1) if len(pieces) > 1 else pixel_features
    z = (tf.matmul(features, self.input_kernel) +
         tf.matmul(tf.concat([attention, h], -1), self.recurrent_kernel) + self.bias)
    h, c = self.lstm_update(z, c)
    return h, [h, c, step + 1.0, recent, context]


def _float32_attention(mechanism, cell_output, attention_state, attention_layer):
  """tfa's _compute_attention with eqs. 7-9 in float32 whatever the compute dtype.

  Under mixed_bfloat16 the scores, their softmax (alpha_ji) and the context c^lang_j stay
  float32 (bfloat16 keeps 2-3 significant digits, too few for a softmax); only
  a_j = tanh(W_c [h^pix_j ; c^lang_j]) runs in the compute dtype (the layer casts its input).
  """
  query = tf.cast(cell_output, tf.float32)
  alignments, next_attention_state = mechanism([query, attention_state])
  context = tf.squeeze(tf.matmul(alignments[:, None, :], mechanism.values), [1])
  attention = attention_layer(tf.concat([query, context], 1))
  return attention, alignments, next_attention_state


class PixelAttentionWrapper(tfa.seq2seq.AttentionWrapper):
  """AttentionWrapper with float32 attention (see :func:`_float32_attention`).

  Its initial alignments, attention state and alignment history are float32 too, so the loop
  state keeps one dtype from the first step on.
  """

  def __init__(self, cell, mechanism, attention_layer, attention_fn=_float32_attention,
               **kwargs):
    super().__init__(cell, mechanism, attention_layer=attention_layer,
                     attention_fn=attention_fn,
                     # Attention first, so the pixel id stays the input's last channel.
                     cell_input_fn=lambda inputs, attention: tf.concat([attention, inputs], -1),
                     **kwargs)

  def get_initial_state(self, inputs=None, batch_size=None, dtype=None):
    state = super().get_initial_state(inputs=inputs, batch_size=batch_size, dtype=dtype)
    history = state.alignment_history
    if self._alignment_history:
      history = tf.TensorArray(tf.float32, size=0, dynamic_size=True,
                               element_shape=state.alignments.shape)
    return state._replace(alignments=tf.cast(state.alignments, tf.float32),
                          attention_state=tf.cast(state.attention_state, tf.float32),
                          alignment_history=history)


class _AttentionAndRecurrentInitializer(tf.keras.initializers.Initializer):
  """W_rec's rows: Glorot for those that see a_{j-1} (as Keras' LSTM kernel), orthogonal for h."""

  def __init__(self, attention_dim: int):
    self.attention_dim = attention_dim

  def __call__(self, shape, dtype=None, **kwargs):
    rows, columns = shape
    parts = []
    if self.attention_dim:
      parts.append(tf.keras.initializers.GlorotUniform()([self.attention_dim, columns], dtype))
    parts.append(tf.keras.initializers.Orthogonal()([rows - self.attention_dim, columns], dtype))
    return tf.concat(parts, 0)

  def get_config(self):
    return {"attention_dim": self.attention_dim}


def _unit_forget_bias(shape, dtype=None, **kwargs):
  """Keras' LSTM default: forget gate bias 1, the others 0."""
  units = shape[0] // 4
  return tf.concat([tf.zeros([units], dtype), tf.ones([units], dtype),
                    tf.zeros([2 * units], dtype)], 0)


# --- how the caption reaches the pixel LSTM -----------------------------------------------------

class Conditioning:
  """What the caption gives the pixel LSTM; the model asks its conditioning, never the config.

  Each ``Config.conditioning`` is one subclass overriding what differs (as tensorflow/nmt's
  ``AttentionModel`` overrides its base model): this base is the unconditional pixel LSTM
  (``"none"``), :class:`MeanConditioning` the noalign baseline, :class:`AttentionConditioning`
  the paper's model (eqs. 7-9).
  """

  encodes = False   # whether a caption encoder (section 4.1) exists
  attends = False   # whether the pixel LSTM is wrapped by AttentionWrapper (eqs. 7-9)

  def __init__(self, model: "AlignPixelRNN"):
    self.model = model

  @property
  def attention_dim(self) -> int:
    """Width of a_{j-1}, fed back into the LSTM's input (Luong's input feeding)."""
    return 0

  @property
  def context_dim(self) -> int:
    """Width of a per-caption vector that joins every pixel's input."""
    return 0

  def build_layers(self) -> None:
    """Creates this conditioning's layers on the model (after the pixel LSTM)."""

  def context(self, annotations, caption_len) -> Optional[tf.Tensor]:
    """The per-caption input vector [batch, context_dim], or None."""
    return None

  def decoder_cell(self, alignment_history: bool = False) -> tf.keras.layers.Layer:
    return self.model.pixel_cell

  def initial_state(self, annotations, caption_len, batch_size, alignment_history: bool = False):
    """(cell, its initial state) for a batch; ``annotations`` and ``caption_len`` may already
    be tiled (samples per caption, beams)."""
    model = self.model
    state = model.pixel_cell.get_initial_state(batch_size=batch_size,
                                               dtype=model.compute_dtype_for_state())
    context = self.context(annotations, caption_len)
    if context is not None:
      state[4] = tf.cast(context, state[4].dtype)
    return self.decoder_cell(alignment_history), state


class MeanConditioning(Conditioning):
  """The noalign baseline: the mean annotation vector joins every pixel's input."""

  encodes = True

  @property
  def context_dim(self) -> int:
    return self.model.annotation_dim

  def context(self, annotations, caption_len) -> tf.Tensor:
    mask = tf.sequence_mask(caption_len, tf.shape(annotations)[1], dtype=annotations.dtype)
    return tf.reduce_sum(annotations * mask[..., None], 1) / tf.reduce_sum(mask, 1, keepdims=True)


class AttentionConditioning(Conditioning):
  """The paper's model: every pixel attends over the caption's words (eqs. 7-9)."""

  encodes = True
  attends = True

  def __init__(self, model: "AlignPixelRNN"):
    super().__init__(model)
    # The wrappers own no weights (they share the cell, the mechanism and the attention layer);
    # this plain object keeps them out of Keras' tracking, hence out of checkpoints.
    self._wrappers: Dict[bool, tf.keras.layers.Layer] = {}

  @property
  def attention_dim(self) -> int:
    return self.model.config.attention_units

  def build_layers(self) -> None:
    model, c = self.model, self.model.config
    # eq. 9: Luong's score e_ji = h^pix_j . W_a h^lang_i (memory projected to the LSTM size).
    model.attention_mechanism = tfa.seq2seq.LuongAttention(c.decoder_units, dtype="float32",
                                                           name="luong_attention")
    # a_j = tanh(W_c [h^pix_j ; c^lang_j]), shared by the training and the sampling wrappers.
    model.attention_layer = tf.keras.layers.Dense(c.attention_units, activation="tanh",
                                                  use_bias=False, name="attention_layer")
    model.attention_layer.build((None, c.decoder_units + model.annotation_dim))  # read as W_c

  def set_memory(self, annotations, caption_len) -> None:
    """The annotations the mechanism attends over, in float32 (eqs. 7-9 are float32 always).

    The memory's sequence length masks padding so it is never attended (eq. 8 over real words).
    With encoder "bilstm_keys" the keys W_a h_i of eq. 9 are made from the BiLSTM part of each
    row and the values (eq. 7's h^lang_i) are its word part, masked as tfa masks the memory.
    """
    mechanism, memory = self.model.attention_mechanism, tf.cast(annotations, tf.float32)
    if self.model.config.encoder != "bilstm_keys":
      mechanism.setup_memory(memory, memory_sequence_length=caption_len)
      return
    width = self.model.annotation_dim
    mechanism.setup_memory(memory[..., width:], memory_sequence_length=caption_len)
    mask = tf.sequence_mask(caption_len, tf.shape(memory)[1], dtype=tf.float32)
    mechanism.values = memory[..., :width] * mask[..., None]

  def decoder_cell(self, alignment_history: bool = False) -> tf.keras.layers.Layer:
    if alignment_history not in self._wrappers:
      model = self.model
      self._wrappers[alignment_history] = PixelAttentionWrapper(
          model.pixel_cell, model.attention_mechanism, model.attention_layer,
          alignment_history=alignment_history, output_attention=True, name="attention_wrapper")
    return self._wrappers[alignment_history]

  def initial_state(self, annotations, caption_len, batch_size, alignment_history: bool = False):
    self.set_memory(annotations, caption_len)
    cell = self.decoder_cell(alignment_history)
    return cell, cell.get_initial_state(batch_size=batch_size,
                                        dtype=self.model.compute_dtype_for_state())


CONDITIONINGS = {"none": Conditioning, "mean": MeanConditioning,
                 "attention": AttentionConditioning}


# --- the model ----------------------------------------------------------------------------------

class AlignPixelRNN(tf.keras.Model):
  """Caption -> annotation vectors -> pixel LSTM with attention -> 256-way softmax per pixel."""

  def __init__(self, config: Config, vocab_size: int, **kwargs):
    super().__init__(name="align_pixel_rnn", **kwargs)
    self.config = config
    self.vocab_size = vocab_size
    c = config
    # A plain object, not tracked by Keras; the layers it creates are the model's own
    # attributes, so checkpoints name them as before conditionings were objects.
    self.conditioning = CONDITIONINGS[c.conditioning](self)
    # (The order in which layers are created is the order of trainable_variables, which the
    # weights' moving average is saved in: keep it.)
    if self.conditioning.encodes:
      # Section 4.1: word embedding (512) and a bidirectional LSTM (512 each way).
      self.word_embedding = tf.keras.layers.Embedding(vocab_size, c.word_embedding_dim,
                                                      name="word_embedding")
      if c.encoder in ("bilstm", "bilstm_keys"):
        self.encoder = tf.keras.layers.Bidirectional(
            tf.keras.layers.LSTM(c.encoder_units, return_sequences=True), merge_mode="concat",
            name="encoder_bilstm")
      if c.encoder in ("embedding", "bilstm_keys"):  # the word's embedding plus its position's
        self.word_position_embedding = tf.keras.layers.Embedding(
            c.max_caption_len, c.word_embedding_dim, name="word_position_embedding")
    # The previous pixel x_{j-1} (eq. 6) enters through an embedding of 256 values + start.
    self.pixel_embedding = tf.keras.layers.Embedding(c.num_levels + 1, c.pixel_embedding_dim,
                                                     name="pixel_embedding")
    self.pixel_embedding.build((None,))  # teacher forcing reads its matrix
    if c.pixel_loop == "fused":
      from text2pixel import kernels
      kernels.ops()  # compiled (once per machine) and loaded here, not inside a traced function
    self.pixel_cell = PixelLSTMCell(c.decoder_units, c.image_side, c.pixel_embedding_dim,
                                    self.conditioning.attention_dim, c.position_embedding_dim,
                                    c.above_context, self.conditioning.context_dim,
                                    name="pixel_lstm")
    self.conditioning.build_layers()
    # eq. 5: softmax over the 256 pixel values, computed in float32 under mixed precision.
    self.output_layer = tf.keras.layers.Dense(c.num_levels, dtype="float32", name="pixel_logits")

  @property
  def annotation_dim(self) -> int:
    """Width of an annotation vector h^lang_i."""
    return self.config.annotation_dim

  def encode(self, caption_ids: tf.Tensor, caption_len: tf.Tensor) -> Optional[tf.Tensor]:
    """Annotation vectors h^lang [batch, N, annotation_dim] (section 4.1), or None for a
    model without an encoder.

    The mask comes from the caption length, not from pad ids, so whatever follows a caption in
    its padded row never reaches the backward LSTM (nor the attention, which masks by length).
    With encoder "bilstm_keys" each row is [word embedding + position ; BiLSTM state]: the
    attention's values, then what its keys are made from (AttentionConditioning.set_memory).
    """
    if not self.conditioning.encodes:
      return None
    embedded = self.word_embedding(caption_ids)
    mask = tf.sequence_mask(caption_len, tf.shape(caption_ids)[1])
    if self.config.encoder == "bilstm":
      return self.encoder(embedded, mask=mask)
    positions = self.word_position_embedding(tf.range(tf.shape(caption_ids)[1]))
    words = embedded + tf.cast(positions, embedded.dtype)[None]
    if self.config.encoder == "embedding":
      return words
    return tf.concat([words, tf.cast(self.encoder(embedded, mask=mask), words.dtype)], -1)

  def decoder_initial_state(self, annotations: Optional[tf.Tensor], caption_len: tf.Tensor,
                            batch_size, alignment_history: bool = False):
    """(the decoder cell, its initial state) for a batch: what every sampler runs (eqs. 6-9)."""
    return self.conditioning.initial_state(annotations, caption_len, batch_size,
                                           alignment_history)

  def compute_dtype_for_state(self):
    return tf.as_dtype(self.pixel_embedding.compute_dtype)

  def pixel_input(self, pixel_ids: tf.Tensor) -> tf.Tensor:
    """The decoder input for previous pixel ids: their embedding and the id itself (last channel).

    This is also the ``embedding_fn`` the tfa samplers call on the ids they draw.
    """
    embedded = self.pixel_embedding(pixel_ids)
    return tf.concat([embedded, tf.cast(pixel_ids, embedded.dtype)[..., None]], axis=-1)

  # --- logits of known images (teacher forcing) ---------------------------------------------

  def logits_stepwise(self, annotations, caption_len, images) -> tf.Tensor:
    """The reference: the samplers' cell run over the image, one pixel at a time (eqs. 5-9)."""
    pixels = tf.reshape(tf.cast(images, tf.int32), [-1, self.config.num_pixels])
    start = tf.fill([tf.shape(pixels)[0], 1], START_SYMBOL)
    inputs = self.pixel_input(tf.concat([start, pixels[:, :-1]], axis=1))     # x_{j-1}
    cell, state = self.decoder_initial_state(annotations, caption_len, tf.shape(inputs)[0])
    rnn = tf.keras.layers.RNN(cell, return_sequences=True, name="pixel_rnn_stepwise")
    return self.output_layer(rnn(inputs, initial_state=state))                # eq. 5

  def logits_from_annotations(self, annotations, caption_len, images) -> tf.Tensor:
    """What :meth:`logits_stepwise` computes, by the fast teacher-forcing loop of the config's
    ``pixel_loop`` (text2pixel/fast_loops.py), built for gradients."""
    from text2pixel import fast_loops
    return fast_loops.teacher_forced_logits(self, annotations, caption_len, images)[0]

  def logits_and_alignments(self, inputs: Dict[str, tf.Tensor]):
    """Teacher-forced logits (as :meth:`call` in training) and log alpha_ji [batch, pixels,
    words] of every pixel j over the words i, differentiable (what attention supervision trains).

    alpha is recomputed from the queries the fast loop ran with: eq. 9's Luong score
    e_ji = h^pix_j . W_a h^lang_i over the mechanism's keys, eq. 8's softmax over real words.
    Padding gets a large negative score rather than -inf, so a zero weight times its log alpha
    is zero. Through Keras' __call__, so that mixed precision reads the weights as call does.
    """
    if not self.conditioning.attends:
      raise ValueError(f"conditioning {self.config.conditioning!r} has no attention to align")
    return self(inputs, training=True, alignments=True)

  def _logits_and_alignments(self, inputs: Dict[str, tf.Tensor]):
    from text2pixel import fast_loops
    caption_len = inputs["caption_len"]
    annotations = self.encode(inputs["caption_ids"], caption_len)
    logits, queries = fast_loops.teacher_forced_logits(self, annotations, caption_len,
                                                       inputs["image"])
    keys = self.attention_mechanism.keys  # W_a h^lang_i, set by the loop for this batch
    scores = tf.einsum("bju,biu->bji", tf.cast(queries, tf.float32), keys)      # eq. 9
    real_word = tf.sequence_mask(caption_len, tf.shape(keys)[1])[:, None, :]
    scores = tf.where(real_word, scores, tf.constant(-1e9, tf.float32))
    return logits, tf.nn.log_softmax(scores)                                    # eq. 8

  def call(self, inputs: Dict[str, tf.Tensor], training=None, alignments: bool = False):
    """Teacher-forced logits. The fused loop serves both training and validation; the graph
    loop's training path is built for gradients, and without them (validation) the samplers'
    cell over the image needs a third of its memory and is faster. With ``alignments``:
    (logits, log alpha) by the fast loop, see :meth:`logits_and_alignments`."""
    if alignments:
      return self._logits_and_alignments(inputs)
    annotations = self.encode(inputs["caption_ids"], inputs["caption_len"])
    fast = training or self.config.pixel_loop == "fused"
    logits = self.logits_from_annotations if fast else self.logits_stepwise
    return logits(annotations, inputs["caption_len"], inputs["image"])

  # --- likelihood (eq. 1) -------------------------------------------------------------------

  def pixel_log_probs(self, logits: tf.Tensor, images: tf.Tensor) -> tf.Tensor:
    """log p(x_j | x_<j, y) for every pixel: [batch, num_pixels] (float32)."""
    targets = tf.reshape(tf.cast(images, tf.int32), [-1, self.config.num_pixels])
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
    return tf.gather(log_probs, targets, batch_dims=2)

  def decode_fused(self, annotations, caption_len, mode: str, targets=None, uniforms=None,
                   temperature=1.0, guidance=None):
    """Scoring, greedy or ancestral decoding in the fused C++ decoder (see
    :func:`fast_loops.fused_decode`): (pixels, log p per pixel, alpha)."""
    from text2pixel import fast_loops
    return fast_loops.fused_decode(self, annotations, caption_len, mode, targets, uniforms,
                                   temperature, guidance)

  def _scores(self, annotations, caption_len, images, loop: Optional[str]) -> tf.Tensor:
    """log p(x | y) in nats per image [batch] for annotations and images of the same batch."""
    if (loop or self.config.pixel_loop) == "fused":
      pixels = tf.reshape(tf.cast(images, tf.int32), [-1, self.config.num_pixels])
      log_probs = self.decode_fused(annotations, caption_len, "score", targets=pixels)[1]
    else:
      log_probs = self.pixel_log_probs(self.logits_stepwise(annotations, caption_len, images),
                                       images)
    return tf.reduce_sum(log_probs, axis=1)

  def log_likelihood(self, caption_ids, caption_len, images,
                     loop: Optional[str] = None) -> tf.Tensor:
    """Exact log p(x | y) in nats per image (eq. 1), [batch]. ``loop``: "fused" (the C++ op) or
    "graph" (TensorFlow ops, what an export holds); default the config's ``pixel_loop``."""
    return self._scores(self.encode(caption_ids, caption_len), caption_len, images, loop)

  def log_likelihood_matrix(self, caption_ids, caption_len, images,
                            loop: Optional[str] = None) -> tf.Tensor:
    """log p(image j | caption i) for every pair: [captions, images] (retrieval, eq. 1).

    The encoder runs once per caption; its annotations are then repeated for every image.
    """
    num_captions, num_images = tf.shape(caption_ids)[0], tf.shape(images)[0]
    annotations = self.encode(caption_ids, caption_len)
    if annotations is not None:
      annotations = tf.repeat(annotations, num_images, axis=0)
    lengths = tf.repeat(caption_len, num_images, axis=0)
    tiled_images = tf.tile(images, [num_captions, 1, 1])
    scores = self._scores(annotations, lengths, tiled_images, loop)
    return tf.reshape(scores, [num_captions, num_images])

def sequence_loss(logits: tf.Tensor, images: tf.Tensor, num_pixels: int,
                  weights: Optional[tf.Tensor] = None, per_image: bool = False) -> tf.Tensor:
  """Weighted sequence cross-entropy (section 6): mean nats per pixel over the batch, or of each
  image ([batch]) with ``per_image`` (what the trainer averages over its replicas)."""
  targets = tf.reshape(tf.cast(images, tf.int32), [-1, num_pixels])
  if weights is None:
    weights = tf.ones_like(targets, tf.float32)
  return tfa.seq2seq.sequence_loss(tf.cast(logits, tf.float32), targets, weights,
                                   average_across_batch=not per_image)


def build(config: Config, vocab_size: int) -> AlignPixelRNN:
  """A model with its weights created (so checkpoints restore into it immediately)."""
  model = AlignPixelRNN(config, vocab_size)
  side, length = config.image_side, config.max_caption_len
  model(dict(caption_ids=tf.ones([1, length], tf.int32), caption_len=tf.ones([1], tf.int32),
             image=tf.zeros([1, side, side], tf.uint8)))
  return model
